//! deploy.toml validation, data-driven: each `fixtures/deploy/X.toml` has an
//! `X.expected` listing the errors it must produce (`LINE:COL PATH
//! [field=substring]`), or `valid`. Plus property tests on the parser.

use std::path::Path;

use bifrost_core::config::{self, ConfigError, KEYS, SECTIONS};
use proptest::prelude::*;

fn field<'a>(e: &'a ConfigError, name: &str) -> &'a str {
    match name {
        "expected" => e.expected.as_deref().unwrap_or(""),
        "found" => e.found.as_deref().unwrap_or(""),
        "suggestion" => e.suggestion.as_deref().unwrap_or(""),
        "message" => &e.message,
        other => panic!("unknown field {other} in fixture"),
    }
}

#[test]
fn fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deploy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let src = std::fs::read_to_string(&path).expect("read fixture");
        let expected = std::fs::read_to_string(path.with_extension("expected")).expect("expected file");
        let name = path.file_name().expect("name").to_string_lossy().to_string();
        let result = config::parse(&src);
        if expected.trim() == "valid" {
            if let Err(errors) = &result {
                panic!("{name} should be valid, got:\n{}", config::render_errors(&src, errors, &name));
            }
            checked += 1;
            continue;
        }
        let errors = result.err().unwrap_or_else(|| panic!("{name} should be invalid"));
        let rendered = config::render_errors(&src, &errors, &name);
        let want: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(errors.len(), want.len(), "{name}: wrong number of errors:\n{rendered}");
        for (e, line) in errors.iter().zip(&want) {
            let mut parts = line.splitn(3, ' ');
            let pos = parts.next().expect("position");
            let path = parts.next().unwrap_or("");
            assert_eq!(format!("{}:{}", e.line, e.column), pos, "{name}: position of {e}\n{rendered}");
            assert_eq!(e.path, path, "{name}: path of {e}");
            if let Some(check) = parts.next() {
                let (f, sub) = check.split_once('=').expect("field=substring");
                assert!(field(e, f).contains(sub), "{name}: {f} of {e} should contain {sub:?}, is {:?}", field(e, f));
            }
            assert!(e.message.starts_with(&e.path) || e.path.is_empty(), "{name}: message names its path: {e}");
        }
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} fixtures ran");
}

#[test]
fn every_problem_reports_expected_and_found() {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deploy/many-errors.toml"))
            .expect("fixture");
    for e in config::parse(&src).expect_err("invalid") {
        assert!(e.found.is_some(), "no 'found' in {e}");
        assert!(
            e.expected.is_some() || e.suggestion.is_some() || e.message.contains("expected one of"),
            "no expectation in {e}"
        );
    }
}

#[test]
fn defaults_fill_in() {
    let c = config::parse("[app]\nname = \"a\"\nruntime = \"node\"\n[scaling]\nmin_replicas = 5\n").expect("valid");
    assert_eq!((c.scaling.min_replicas, c.scaling.max_replicas, c.scaling.cpu_target), (5, 5, 70));
    assert_eq!(c.health.path, "/");
    assert_eq!(c.health.interval.millis, 10_000);
    assert_eq!(c.run.port, 8080);
    assert_eq!(c.resources.memory.bytes, 256 << 20);
    assert_eq!(c.rollout.steps, vec![10, 50, 100]);
}

#[test]
fn every_key_in_the_table_is_checked() {
    // Give every known key a value of an impossible type: each must be reported at its own path.
    let mut src = String::new();
    for (section, _, _) in SECTIONS {
        if *section == "env" {
            continue;
        }
        src.push_str(&format!("[{section}]\n"));
        for k in KEYS.iter().filter(|k| k.section == *section) {
            src.push_str(&format!("{} = 1979-05-27\n", k.key));
        }
    }
    let errors = config::parse(&src).expect_err("all wrong");
    for k in KEYS {
        let path = format!("{}.{}", k.section, k.key);
        assert!(errors.iter().any(|e| e.path == path), "{path} is in the key table but not validated");
    }
}

#[test]
fn json_schema_file_is_current() {
    let generated = serde_json::to_string_pretty(&config::json_schema()).expect("json") + "\n";
    bifrost_testkit::golden::check("schemas/deploy.schema.json", &generated);
}

#[test]
fn docs_name_every_key() {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/deploy-toml.md"))
        .expect("docs/deploy-toml.md");
    for (section, _, _) in SECTIONS {
        assert!(docs.contains(&format!("[{section}]")), "docs miss section [{section}]");
    }
    for k in KEYS {
        assert!(docs.contains(&format!("`{}`", k.key)), "docs miss {}.{}", k.section, k.key);
        assert!(docs.contains(k.default), "docs miss the default of {}.{} ({})", k.section, k.key, k.default);
    }
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..1000).prop_map(|n| format!("\"{n}s\"")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("[10, 50, 100]".to_string()),
        Just("{ secret = \"x\" }".to_string()),
        "[ -~]{0,10}".prop_map(|s| s), // arbitrary printable junk
    ]
}

fn key() -> impl Strategy<Value = String> {
    let mut known: Vec<String> = KEYS.iter().map(|k| k.key.to_string()).collect();
    known.extend(["LOG_LEVEL".to_string(), "bogus".to_string(), "naem".to_string()]);
    proptest::sample::select(known)
}

fn document() -> impl Strategy<Value = String> {
    let sections: Vec<String> = SECTIONS.iter().map(|s| s.0.to_string()).chain(["apps".to_string()]).collect();
    proptest::collection::vec(
        (proptest::sample::select(sections), proptest::collection::vec((key(), toml_value()), 0..5)),
        0..6,
    )
    .prop_map(|secs| {
        let mut out = String::new();
        for (s, kvs) in secs {
            out.push_str(&format!("[{s}]\n"));
            for (k, v) in kvs {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn errors_point_inside_the_document(src in document()) {
        if let Err(errors) = config::parse(&src) {
            prop_assert!(!errors.is_empty());
            let lines = src.lines().count().max(1) as u32;
            for e in &errors {
                prop_assert!(e.line >= 1 && e.line <= lines + 1, "{} outside {} lines", e, lines);
                prop_assert!(e.column >= 1);
                prop_assert!(!e.message.is_empty());
            }
            let mut sorted = errors.clone();
            sorted.sort_by_key(|e| (e.line, e.column));
            prop_assert_eq!(sorted, errors);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,200}") {
        if let Err(errors) = config::parse(&src) {
            prop_assert!(!errors.is_empty());
        }
    }

    #[test]
    fn valid_configs_round_trip_through_the_snapshot(min in 1u32..10, extra in 0u32..10, target in 1u32..=100, secs in 2u64..120) {
        let src = format!(
            "[app]\nname = \"app\"\nruntime = \"go\"\n[scaling]\nmin_replicas = {min}\nmax_replicas = {}\ncpu_target = {target}\n[health]\ninterval = \"{secs}s\"\ntimeout = \"1s\"\n",
            min + extra
        );
        let c = config::parse(&src).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let json = serde_json::to_string(&c).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: config::DeployConfig = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, c);
    }
}

#[test]
fn an_unset_health_timeout_follows_a_short_interval() {
    let c = config::parse("[app]\nname = \"a\"\nruntime = \"python\"\n[health]\ninterval = \"1s\"\n")
        .unwrap_or_else(|e| panic!("interval alone must be valid: {e:?}"));
    assert_eq!(c.health.timeout, config::Duration::from_millis(500));
    let c = config::parse("[app]\nname = \"a\"\nruntime = \"python\"\n[health]\ninterval = \"1m\"\n").expect("valid");
    assert_eq!(c.health.timeout, config::Duration::from_secs(2), "the timeout stays at most 2s");
}

#[test]
fn a_written_health_timeout_not_shorter_than_the_interval_is_refused_at_the_timeout() {
    let src = "[app]\nname = \"a\"\nruntime = \"python\"\n[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n";
    let errors = config::parse(src).expect_err("timeout >= interval");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "health.timeout");
    assert_eq!((errors[0].line, errors[0].column), (6, 11));
    assert!(errors[0].message.contains("shorter than health.interval (1s)"), "{}", errors[0].message);
}

#[test]
fn documented_defaults_are_the_values_a_minimal_config_gets() {
    let src = "[app]\nname = \"a\"\nruntime = \"docker\"\n";
    let c = config::parse(src).expect("valid");
    let explained = config::explain(src, &c);
    let mut compared = 0;
    for e in &explained {
        let written = matches!(e.key.as_str(), "app.name" | "app.runtime");
        assert_eq!(e.set, written, "{}: set", e.key);
        // Defaults written as a TOML value must be exactly the effective one;
        // the others (`required`, `none`, formulas) are prose.
        if toml::from_str::<toml::Table>(&format!("v = {}", e.default)).is_ok() {
            assert_eq!(
                e.value, e.default,
                "{}: the docs say {} but a minimal config gets {}",
                e.key, e.default, e.value
            );
            compared += 1;
        }
    }
    assert!(compared >= 15, "only {compared} literal defaults compared");
}

#[test]
fn explain_marks_what_the_user_set_and_shows_derived_defaults() {
    let src = "[app]\nname = \"a\"\nruntime = \"python\"\n[health]\ninterval = \"1s\"\n[scaling]\nmin_replicas = 5\n";
    let c = config::parse(src).expect("valid");
    let explained = config::explain(src, &c);
    let get = |k: &str| explained.iter().find(|e| e.key == k).unwrap_or_else(|| panic!("{k} explained"));
    assert!(get("health.interval").set);
    assert_eq!((get("health.timeout").value.as_str(), get("health.timeout").set), ("\"500ms\"", false));
    assert_eq!((get("scaling.max_replicas").value.as_str(), get("scaling.max_replicas").set), ("5", false));
}
