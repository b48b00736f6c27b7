use serde_json::json;

use super::*;

fn deploy_input(disk: f64, load: f64, mem: f64) -> Value {
    json!({"action": "deploy", "app": "web", "host": {"disk_free_gb": disk, "cpu_load": load, "memory_available_mb": mem}})
}

fn shipped_decision(gate: Gate, data: Option<Value>, input: Value) -> Decision {
    let (rego, shipped) = gate.shipped();
    Evaluator::new().decide(gate, rego, &data.unwrap_or(shipped), input)
}

#[test]
fn the_shipped_policies_compile_and_their_data_are_objects() {
    for gate in Gate::ALL {
        let (rego, data) = gate.shipped();
        check(gate, rego).unwrap_or_else(|e| panic!("{gate}: {e}"));
        assert!(data.as_object().is_some_and(|o| !o.is_empty()), "{gate} data: {data}");
    }
}

#[test]
fn a_healthy_host_passes_the_deploy_gate() {
    let d = shipped_decision(Gate::Deploy, None, deploy_input(50.0, 0.5, 4096.0));
    assert!(d.allow, "{d:?}");
    assert!(d.deny.is_empty());
    assert_eq!(d.lines("deployment"), ["[PASS] policy deploy allowed deployment"]);
}

#[test]
fn a_full_disk_is_denied_with_the_numbers_in_the_reason() {
    let d = shipped_decision(Gate::Deploy, Some(json!({"min_disk_gb": 10})), deploy_input(2.0, 0.5, 4096.0));
    assert!(!d.allow);
    assert_eq!(d.deny, ["Disk free 2GB is below minimum 10GB"]);
    assert_eq!(
        d.lines("deployment"),
        ["[DENY] Disk free 2GB is below minimum 10GB", "[BLOCKED] deployment denied by policy deploy"]
    );
}

#[test]
fn every_broken_limit_is_a_reason_of_its_own() {
    let d = shipped_decision(Gate::Deploy, None, deploy_input(1.0, 9.0, 10.0));
    assert_eq!(d.deny.len(), 3, "{:?}", d.deny);
    assert!(d.deny.iter().any(|m| m.starts_with("CPU load 9 per core exceeds maximum 4")), "{:?}", d.deny);
    assert!(d.deny.iter().any(|m| m.starts_with("Memory available 10MB")), "{:?}", d.deny);
}

#[test]
fn a_fact_the_host_cannot_tell_fires_no_rule() {
    let d = shipped_decision(Gate::Deploy, None, json!({"action": "deploy", "host": {}}));
    assert!(d.allow, "{d:?}");
}

#[test]
fn the_promote_gate_denies_on_error_rate_and_on_p99() {
    let input = json!({"canary": {"requests": 200, "error_rate": 0.052, "p99_ms": 620.0}, "overrides": {}});
    let d = shipped_decision(Gate::Promote, None, input);
    assert!(!d.allow);
    assert!(d.deny.contains(&"Error rate 5.2% exceeds maximum 1%".to_string()), "{:?}", d.deny);
    assert!(d.deny.contains(&"P99 latency 620ms exceeds maximum 500ms".to_string()), "{:?}", d.deny);
}

#[test]
fn an_apps_own_limits_override_the_policy_data() {
    let input = json!({"canary": {"error_rate": 0.05, "p99_ms": 100.0}, "overrides": {"max_error_rate": 0.1}});
    assert!(shipped_decision(Gate::Promote, None, input).allow);
    let input = json!({"canary": {"error_rate": 0.0, "p99_ms": 100.0}, "overrides": {"max_p99_ms": 50}});
    let d = shipped_decision(Gate::Promote, None, input);
    assert_eq!(d.deny, ["P99 latency 100ms exceeds maximum 50ms"]);
}

#[test]
fn a_syntax_error_is_refused_with_its_line() {
    let rego = "package deploy\n\nimport rego.v1\n\ndeny contains msg if {\n  msg := \n}\n";
    let e = check(Gate::Deploy, rego).expect_err("must not compile");
    assert!(e.message.starts_with("policy deploy does not compile: "), "{e:?}");
    assert!(!e.message.contains("-->"), "{e:?}");
    assert!(e.line.is_some_and(|l| (6..=7).contains(&l)), "{e:?}");
}

#[test]
fn a_policy_must_declare_its_gates_package() {
    let e = check(Gate::Deploy, "package infra\nimport rego.v1\ndeny contains \"x\" if false\n")
        .expect_err("wrong package");
    assert_eq!(e.message, "policy deploy must declare `package deploy` (found `package infra`)");
    assert_eq!(e.line, Some(1));
}

#[test]
fn data_must_be_an_object() {
    assert!(check_data(Gate::Deploy, &json!([1, 2])).is_err());
    assert!(check_data(Gate::Deploy, &json!({"min_disk_gb": 1})).is_ok());
}

#[test]
fn a_deny_that_is_not_a_set_fails_closed() {
    let rego = "package deploy\nimport rego.v1\ndeny := 3\n";
    let d = Evaluator::new().decide(Gate::Deploy, rego, &json!({}), json!({}));
    assert!(!d.allow);
    assert!(d.error.is_some());
    assert!(d.deny[0].starts_with("policy deploy failed: `deny` must be a set"), "{:?}", d.deny);
}

#[test]
fn an_evaluation_error_denies_with_the_error_as_reason() {
    // Dividing by zero is an error in Rego, not undefined.
    let rego = "package deploy\nimport rego.v1\ndeny contains msg if {\n  x := 1 / input.zero\n  msg := sprintf(\"%v\", [x])\n}\n";
    let d = Evaluator::new().decide(Gate::Deploy, rego, &json!({}), json!({"zero": 0}));
    assert!(!d.allow, "{d:?}");
    assert!(d.deny[0].starts_with("policy deploy failed"), "{:?}", d.deny);
}

#[test]
fn a_runaway_policy_is_stopped_by_the_execution_limit() {
    // 10^8 iterations: far beyond the limit.
    let rego = "package deploy\nimport rego.v1\ndeny contains msg if {\n  n := count([x | some x in numbers.range(1, 100000000)])\n  msg := sprintf(\"%v\", [n])\n}\n";
    let d = Evaluator::new().decide(Gate::Deploy, rego, &json!({}), json!({}));
    assert!(!d.allow, "{d:?}");
    assert!(d.error.is_some());
}

#[test]
fn the_decision_names_the_policy_and_data_it_used() {
    let (rego, data) = Gate::Deploy.shipped();
    let d = Evaluator::new().decide(Gate::Deploy, rego, &data, deploy_input(50.0, 0.1, 4096.0));
    assert_eq!(d.policy_sha256, sha256_text(rego));
    assert_eq!(d.data_sha256, sha256_data(&data));
    let changed = Evaluator::new().decide(Gate::Deploy, rego, &json!({"min_disk_gb": 1}), d.input.clone());
    assert_ne!(changed.data_sha256, d.data_sha256);
}

#[test]
fn a_cached_engine_sees_each_new_input() {
    let ev = Evaluator::new();
    let (rego, data) = Gate::Deploy.shipped();
    assert!(ev.decide(Gate::Deploy, rego, &data, deploy_input(50.0, 0.1, 4096.0)).allow);
    assert!(!ev.decide(Gate::Deploy, rego, &data, deploy_input(1.0, 0.1, 4096.0)).allow);
    assert!(ev.decide(Gate::Deploy, rego, &data, deploy_input(50.0, 0.1, 4096.0)).allow);
}

#[test]
fn gate_names_parse_and_unknown_ones_are_refused() {
    assert_eq!("promote".parse::<Gate>(), Ok(Gate::Promote));
    let e = "infra".parse::<Gate>().expect_err("unknown");
    assert_eq!(e.message, "unknown policy \"infra\" (expected one of deploy, promote)");
}

#[test]
fn a_compile_error_says_what_is_wrong_not_where_only() {
    let rego = "package deploy\nimport rego.v1\nlimit := 1 if { input.x } else := data.deploy.limit\ndeny contains \"x\" if limit > 2\n";
    let e = check(Gate::Deploy, rego).expect_err("recursive");
    assert!(e.message.contains("recursion"), "{e:?}");
    assert_eq!(e.line, Some(3), "{e:?}");
    assert!(!e.message.contains("-->"), "{e:?}");
}
