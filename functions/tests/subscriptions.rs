//! The subscription table exists twice — derived from the functions here,
//! and written out for Pub/Sub in terraform/main.tf. They must agree.

use std::collections::BTreeSet;

fn terraform_table() -> BTreeSet<(String, String, String)> {
    let tf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../terraform/main.tf")).expect("main.tf");
    let start = tf.find("subscriptions = {").expect("a subscriptions table in main.tf");
    let end = start + tf[start..].find("\n  }").expect("the table ends");
    tf[start..end]
        .lines()
        .skip(1)
        .filter_map(|line| {
            // "validate-queued" = { function = "validate", status = "queued" }
            let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
            match quoted[..] {
                [name, function, status] => {
                    Some((name.to_string(), function.to_string(), format!("deployment.{status}")))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn terraform_subscribes_exactly_what_the_functions_consume() {
    let derived: BTreeSet<(String, String, String)> =
        bifrost_functions::subscriptions().into_iter().map(|s| (s.name, s.function, s.topic)).collect();
    let terraform = terraform_table();
    assert!(!terraform.is_empty(), "no rows parsed from terraform/main.tf");
    let missing: Vec<_> = derived.difference(&terraform).collect();
    let extra: Vec<_> = terraform.difference(&derived).collect();
    assert!(missing.is_empty() && extra.is_empty(), "terraform lacks {missing:?}; terraform has extra {extra:?}");
}

#[test]
fn every_function_is_a_push_service_in_terraform() {
    let tf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../terraform/main.tf")).expect("main.tf");
    let line = tf.lines().find(|l| l.trim_start().starts_with("push_functions")).expect("push_functions");
    for f in bifrost_functions::functions() {
        assert!(line.contains(&format!("\"{}\"", f.name())), "{} is not in {line}", f.name());
    }
}

fn terraform_file(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../terraform/{name}", env!("CARGO_MANIFEST_DIR"))).expect("terraform file")
}

#[test]
fn cloud_scheduler_calls_exactly_the_functions_with_periodic_work() {
    let tf = terraform_file("scheduler.tf");
    for f in bifrost_functions::functions() {
        let called = tf.contains(&format!("functions[\"{}\"].uri}}/run", f.name()));
        assert_eq!(
            called,
            f.scheduled(),
            "{}: scheduled() = {}, scheduler.tf calls it: {called}",
            f.name(),
            f.scheduled()
        );
    }
}

#[test]
fn dead_letter_topics_push_to_the_function_that_takes_them() {
    let tf = terraform_file("pubsub.tf");
    let takers: Vec<_> = bifrost_functions::functions().into_iter().filter(|f| f.takes_dead_letters()).collect();
    assert_eq!(takers.len(), 1, "exactly one function takes dead letters");
    let endpoint =
        format!("functions[\"{}\"].uri}}/push/{}", takers[0].name(), bifrost_functions::driver::DEAD_LETTER_PUSH);
    assert!(tf.contains(&endpoint), "pubsub.tf pushes dead letters elsewhere than {endpoint}");
}
