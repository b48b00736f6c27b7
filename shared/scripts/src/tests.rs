use std::time::Instant;

use super::*;

fn script(source: &str) -> Script {
    Script::new("routes/app.lua", source, Limits::default())
}

fn run(s: &Script, path: &str) -> Result<Action, ScriptError> {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-variant", http::HeaderValue::from_static("b"));
    headers.append("accept", http::HeaderValue::from_static("text/html"));
    headers.append("accept", http::HeaderValue::from_static("*/*"));
    let mut req = Request {
        method: "GET",
        path,
        query: "a=1",
        headers: Some(&mut headers),
        client_ip: "10.0.0.1",
        app: "web",
        deployment: "d1",
    };
    Engine::run("web", s, &mut req)
}

#[test]
fn a_script_sees_the_request_and_its_answers_come_back_checked() {
    let s = script(
        r#"
        function handle(req)
          if req.path == "/maintenance" then
            return { status = 503, body = "back soon", headers = { ["retry-after"] = "60" } }
          end
          if req.headers["x-variant"] == "b" and req.path == "/pin" then
            return { variant = "canary", set_headers = { ["x-seen"] = req.method .. " " .. req.query .. " " .. req.headers.accept } }
          end
          if req.path == "/old" then return { path = "/new?x=1", remove_headers = { "x-variant" }, response_headers = { ["x-app"] = req.app } } end
        end
        "#,
    );
    assert_eq!(run(&s, "/").expect("runs"), Action::Pass);
    let Action::Answer(a) = run(&s, "/maintenance").expect("runs") else { panic!("not an answer") };
    assert_eq!((a.status.as_u16(), a.body.as_slice()), (503, &b"back soon"[..]));
    assert_eq!(a.headers[0].0.as_str(), "retry-after");
    let Action::Change(c) = run(&s, "/pin").expect("runs") else { panic!("not changes") };
    assert_eq!(c.variant, Some(Variant::Canary));
    assert_eq!(c.set_headers[0].1.to_str().ok(), Some("GET a=1 text/html, */*"));
    let Action::Change(c) = run(&s, "/old").expect("runs") else { panic!("not changes") };
    assert_eq!(c.path.as_deref(), Some("/new?x=1"));
    assert_eq!(c.remove_headers[0].as_str(), "x-variant");
    assert_eq!(c.response_headers[0].1.to_str().ok(), Some("web"));
}

#[test]
fn req_headers_are_fetched_as_read_and_the_request_gets_its_headers_back() {
    let s = script(
        r#"
        local kept
        function handle(req)
          local h = req.headers
          if req.path == "/count" then
            h.accept = "mine"
            local n, seen = 0, {}
            for name, value in pairs(h) do n = n + 1 seen[#seen + 1] = name .. "=" .. value end
            table.sort(seen)
            return { status = 200, body = n .. " " .. table.concat(seen, ";") }
          end
          if req.path == "/one" then
            local v = h["x-variant"]
            return { status = 200, body = v .. " " .. tostring(rawget(h, "accept")) .. " " .. tostring(h["X-Variant"])
                                       .. " " .. tostring(h["x-none"]) .. " " .. tostring(h[1]) .. " " .. tostring(h[h]) }
          end
          if req.path == "/keep" then kept = req return nil end
          if req.path == "/kept" then return { status = 200, body = tostring(kept.headers["x-variant"]) } end
          return { status = 200, body = tostring(next(h)) }
        end
        "#,
    );
    let answer = |path: &str| match run(&s, path) {
        Ok(Action::Answer(a)) => String::from_utf8(a.body).expect("text"),
        other => panic!("{path}: {other:?}"),
    };
    assert_eq!(answer("/"), "nil", "nothing fetched while unread");
    assert_eq!(answer("/one"), "b nil nil nil nil nil", "a read fetches that name alone; names are lowercase");
    assert_eq!(answer("/count"), "2 accept=mine;x-variant=b", "pairs fetches the rest; the script's own value stays");
    assert_eq!(run(&s, "/keep"), Ok(Action::Pass));
    assert_eq!(answer("/kept"), "b", "a kept req reads the current request's headers");

    // The map is lent for the call and comes back whole, read or not.
    for path in ["/", "/count"] {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-variant", http::HeaderValue::from_static("b"));
        headers.append("accept", http::HeaderValue::from_static("*/*"));
        let before = headers.clone();
        let mut req = Request {
            method: "GET",
            path,
            query: "",
            headers: Some(&mut headers),
            client_ip: "",
            app: "web",
            deployment: "d1",
        };
        assert!(Engine::run("web", &s, &mut req).is_ok());
        assert_eq!(headers, before, "{path}");
    }
}

#[test]
fn bad_answers_are_the_scripts_errors() {
    for (body, says) in [
        ("return { status = 42 }", "status"),
        ("return { path = 'no-slash' }", "path"),
        ("return { set_headers = { ['bad name'] = 'x' } }", "header name"),
        ("return { set_headers = { ['x-a'] = 'line\\nbreak' } }", "header value"),
        ("return { variant = 'blue' }", "variant"),
        ("return 'hello'", "nil or a table"),
    ] {
        let s = script(&format!("function handle(req) {body} end"));
        let e = run(&s, "/").expect_err(body);
        assert_eq!(e.kind, ErrorKind::Runtime, "{body}");
        assert!(e.message.contains(says), "{body}: {}", e.message);
    }
}

#[test]
fn a_syntax_error_names_the_script_and_the_line() {
    let e = compile("routes/app.lua", "function handle(req)\n  return {\nend\n").expect_err("does not compile");
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!(e.line, Some(3), "{}", e.message);
    assert!(e.message.starts_with("routes/app.lua:3:"), "{}", e.message);
    assert!(compile("routes/app.lua", "function handle(req) end").is_ok());
}

#[test]
fn a_runtime_error_has_its_line() {
    let s = script("function handle(req)\n  local t = nil\n  return t.x\nend");
    let e = run(&s, "/").expect_err("indexes nil");
    assert_eq!((e.kind, e.line), (ErrorKind::Runtime, Some(3)), "{}", e.message);
}

#[test]
fn nothing_outside_the_four_libraries_is_reachable() {
    for expr in [
        "require('os')",
        "os.execute('id')",
        "io.open('/etc/passwd')",
        "load('return 1')",
        "loadstring('return 1')",
        "dofile('/etc/passwd')",
        "loadfile('/etc/passwd')",
        "collectgarbage('count')",
        "string.dump(handle)",
        "debug.getinfo(1)",
        "package.loadlib('x', 'y')",
        "print('to the operator')",
        "coroutine.create(handle)",
    ] {
        let s = script(&format!("function handle(req) return {{ body = tostring({expr}), status = 200 }} end"));
        let e = run(&s, "/").expect_err(expr);
        assert_eq!(e.kind, ErrorKind::Runtime, "{expr}: {}", e.message);
        assert!(e.message.contains("nil"), "{expr} should be nil: {}", e.message);
    }
}

#[test]
fn binary_chunks_are_refused() {
    // Lua's signature for a precompiled chunk.
    let e = compile("x.lua", "\x1bLua\x54\x00").expect_err("binary");
    assert!(e.message.contains("binary") || e.message.contains("text"), "{}", e.message);
}

fn assert_contained(body: &str, expect: &str) -> ScriptError {
    let s = script(&format!("function handle(req)\n  {body}\nend"));
    let started = Instant::now();
    let e = run(&s, "/").expect_err(body);
    let took = started.elapsed();
    assert_eq!(e.kind, ErrorKind::Limit, "{body}: {}", e.message);
    assert!(e.message.contains(expect), "{body}: {}", e.message);
    // The next request, on this same thread, runs normally.
    let ok = script("function handle(req) return nil end");
    assert_eq!(run(&ok, "/").expect("a good script runs after"), Action::Pass);
    eprintln!("{body}: stopped after {took:?}: {}", e.message);
    e
}

#[test]
fn an_endless_loop_is_stopped_with_its_line() {
    let s = script("function handle(req)\n  while true do end\nend");
    let e = run(&s, "/").expect_err("loops");
    assert_eq!((e.kind, e.line), (ErrorKind::Limit, Some(2)), "{}", e.message);
    // Whichever limit comes first: on a loaded machine the 20 ms deadline
    // can pass before a million instructions have run (a CI flake).
    assert!(e.message.contains("instruction limit") || e.message.contains("time limit"), "{}", e.message);
}

#[test]
fn pcall_cannot_swallow_a_limit() {
    assert_contained("while true do pcall(function() while true do end end) end", "limit exceeded");
    assert_contained(
        "for i = 1, 1e9 do xpcall(function() while true do end end, function() end) end",
        "limit exceeded",
    );
}

#[test]
fn a_memory_bomb_is_stopped() {
    assert_contained("local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 1000) .. i end", "limit exceeded");
    assert_contained("local s = 'x' while true do s = s .. s end", "limit exceeded");
}

#[test]
fn string_rep_of_a_gigabyte_is_refused_before_it_runs() {
    assert_contained("local s = string.rep('x', 1e9)", "string limit");
    assert_contained("local s = ('x'):rep(1e9)", "string limit");
    assert_contained("local s = ('x'):rep(1e3, ('y'):rep(1e6))", "string limit");
}

#[test]
fn a_pathological_pattern_is_refused_before_it_runs() {
    let e = assert_contained(
        "local s = string.rep('a', 5000) return { status = 200, body = tostring(s:find('.-.-.-.-.-.-b')) }",
        "pattern limit",
    );
    assert_eq!(e.line, Some(2), "the script's line, not the guard's: {}", e.message);
    assert_contained("local s = string.rep('a', 5000) for m in s:gmatch('(a*)*b') do end", "pattern limit");
    // The same pattern, plain, on the same subject: linear, allowed.
    let s = script(
        "function handle(req) local s = string.rep('a', 5000) return { status = 200, body = tostring(s:find('.-.-b', 1, true)) } end",
    );
    assert!(matches!(run(&s, "/"), Ok(Action::Answer(_))));
}

#[test]
fn a_number_as_subject_or_pattern_is_bounded_like_a_string() {
    // Lua turns a number into its text for the pattern functions: on 19
    // digits, sixteen lazy repeats are billions of steps in one C call.
    assert_contained(
        "return { body = tostring(string.find(1111111111111111111, ('.-'):rep(16) .. 'x')) }",
        "pattern limit",
    );
    assert_contained(
        "local s = ('9'):rep(5000) return { body = tostring(s:find(('.-'):rep(4) .. 'x')) }",
        "pattern limit",
    );
}

#[test]
fn a_slow_pattern_call_past_the_deadline_is_refused_before_the_count_hook_runs() {
    // Each call may be ~10 ms: a loop of them must not wait for the hook
    // (every 1,000 instructions) to see the clock. A zero deadline makes
    // the first costly call the one past it.
    let limits = Limits { deadline: std::time::Duration::ZERO, ..Limits::default() };
    let body = "local s = ('a'):rep(200)\n  s:find('a-b')";
    let s = Script::new("routes/app.lua", &format!("function handle(req)\n  {body}\nend"), limits);
    let e = run(&s, "/").expect_err("past the deadline");
    assert_eq!((e.kind, e.line), (ErrorKind::Limit, Some(3)), "{}", e.message);
    assert!(e.message.contains("time limit exceeded in a pattern function"), "{}", e.message);
    // A cheap pattern (anchored, nothing repeated) does not read the clock.
    let s = Script::new("routes/app.lua", "function handle(req) return req.path:find('^/a') and {} end", limits);
    assert_eq!(run(&s, "/a"), Ok(Action::Change(Changes::default())));
}

#[test]
fn a_state_over_its_limit_is_dropped_and_made_anew() {
    // A global that grows by a megabyte a request: once the memory limit
    // stops it, the next request starts from a fresh state.
    let s = script(
        "grown = grown or {}\nfunction handle(req)\n  grown[#grown + 1] = string.rep('x', 1 << 20)\n  return { status = 200, body = tostring(#grown) }\nend",
    );
    let mut bodies = Vec::new();
    let mut limited = 0;
    for _ in 0..40 {
        match run(&s, "/") {
            Ok(Action::Answer(a)) => bodies.push(String::from_utf8(a.body).expect("utf-8")),
            Err(e) if e.kind == ErrorKind::Limit => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(limited >= 2, "the memory limit stopped it more than once ({limited})");
    assert!(bodies.iter().filter(|b| *b == "1").count() >= 2, "it started over after a limit: {bodies:?}");
}

#[test]
fn a_new_version_replaces_the_threads_state() {
    let a = script("function handle(req) return { status = 200, body = 'a' } end");
    let b = script("function handle(req) return { status = 200, body = 'b' } end");
    for (s, want) in [(&a, "a"), (&b, "b"), (&a, "a")] {
        let Ok(Action::Answer(x)) = run(s, "/") else { panic!("answers") };
        assert_eq!(x.body, want.as_bytes());
    }
}

#[test]
fn the_dry_run_refuses_what_fails_on_the_synthetic_request() {
    assert!(dry_run(&script("function handle(req) return nil end")).is_ok());
    assert_eq!(dry_run(&script("x = 1")).expect_err("no handle").kind, ErrorKind::Runtime);
    assert_eq!(dry_run(&script("while true do end")).expect_err("top level loops").kind, ErrorKind::Limit);
    assert_eq!(
        dry_run(&script("function handle(req) return require('os') end")).expect_err("require").kind,
        ErrorKind::Runtime
    );
}

#[test]
fn a_thread_keeps_a_bounded_number_of_states_dropping_the_least_recently_used() {
    let s = script("function handle(req) return { status = 200, body = req.app } end");
    let (mut headers, mut req) = synthetic_request();
    req.headers = Some(&mut headers);
    let apps: Vec<String> = (0..STATES_PER_THREAD + 10).map(|i| format!("bounded-{i}")).collect();
    for app in &apps {
        let mut r = Request { app, headers: req.headers.as_deref_mut(), ..req };
        let Ok(Action::Answer(a)) = Engine::run(app, &s, &mut r) else { panic!("answers") };
        assert_eq!(a.body, app.as_bytes());
    }
    let kept = |app: &str| STATES.with(|st| st.borrow().by_app.contains_key(app));
    assert!(Engine::states() <= STATES_PER_THREAD, "{} states", Engine::states());
    assert!(!kept(&apps[0]) && !kept(&apps[9]), "the first ones were dropped");
    assert!(kept(&apps[10]) && kept(apps.last().expect("apps")), "the recent ones stay");
    // Used again, the oldest kept one becomes the newest; the next oldest goes.
    let mut run = |app: &String| {
        let mut r = Request { app, headers: req.headers.as_deref_mut(), ..req };
        assert!(matches!(Engine::run(app, &s, &mut r), Ok(Action::Answer(_))));
    };
    run(&apps[10]);
    run(&apps[0]);
    assert!(kept(&apps[10]) && kept(&apps[0]) && !kept(&apps[11]), "the least recently used went");
    assert!(Engine::states() <= STATES_PER_THREAD);
}
