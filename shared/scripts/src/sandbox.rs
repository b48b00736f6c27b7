//! The Lua state a script runs in: what it can reach, and the limits the
//! count hook, the allocator and the string wrappers enforce.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use mlua::{ChunkMode, Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Value, VmState};

use crate::convert::{self, Action, Request};
use crate::{ErrorKind, Limits, Script, ScriptError, pattern};

/// Instructions between two checks of the budget and the clock.
const CHECK_EVERY: u32 = 1000;

/// One request's budget, shared with the hook and the wrappers.
#[derive(Debug)]
pub(crate) struct Budget {
    remaining: Cell<i64>,
    deadline: Cell<Instant>,
    /// The limit hit, once hit: raised again at every `pcall` boundary.
    tripped: Cell<Option<&'static str>>,
    /// Where it was hit, when known.
    line: Cell<Option<u32>>,
    limits: Limits,
}

impl Budget {
    fn new(limits: Limits) -> Rc<Budget> {
        Rc::new(Budget {
            remaining: Cell::new(0),
            deadline: Cell::new(Instant::now()),
            tripped: Cell::new(None),
            line: Cell::new(None),
            limits,
        })
    }

    fn start(&self) {
        self.remaining.set(self.limits.instructions as i64);
        self.deadline.set(Instant::now() + self.limits.deadline);
        self.tripped.set(None);
        self.line.set(None);
    }

    fn trip(&self, what: &'static str, line: Option<usize>) -> mlua::Error {
        self.tripped.set(Some(what));
        self.line.set(line.and_then(|l| u32::try_from(l).ok()));
        mlua::Error::runtime(what)
    }

    /// The limit hit during this request, and where.
    pub(crate) fn tripped(&self) -> Option<(&'static str, Option<u32>)> {
        self.tripped.get().map(|what| (what, self.line.get()))
    }
}

/// A sandboxed state and the budget its hook reads.
pub(crate) struct State(pub Lua, pub Rc<Budget>);

/// Globals a script may not have.
const REMOVED: [&str; 8] = ["load", "loadstring", "dofile", "loadfile", "require", "collectgarbage", "print", "module"];

pub(crate) fn new_state(limits: &Limits) -> mlua::Result<State> {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8, LuaOptions::default())?;
    let budget = Budget::new(*limits);
    let globals = lua.globals();
    for name in REMOVED {
        globals.raw_set(name, Value::Nil)?;
    }
    let string: mlua::Table = globals.get("string")?;
    string.raw_set("dump", Value::Nil)?;
    bound_strings(&lua, &string, &budget)?;
    rethrow_limits(&lua, &budget)?;

    let b = budget.clone();
    lua.set_hook(HookTriggers::new().every_nth_instruction(CHECK_EVERY), move |_, debug| {
        let left = b.remaining.get() - i64::from(CHECK_EVERY);
        b.remaining.set(left);
        if let Some(what) = b.tripped.get() {
            return Err(mlua::Error::runtime(what));
        }
        if left < 0 {
            return Err(b.trip("instruction limit exceeded", debug.current_line()));
        }
        if Instant::now() > b.deadline.get() {
            return Err(b.trip("time limit exceeded", debug.current_line()));
        }
        Ok(VmState::Continue)
    })?;
    // Generational: a request's tables die young.
    lua.gc_gen(0, 0);
    lua.set_memory_limit(limits.memory)?;
    Ok(State(lua, budget))
}

/// `string.rep` by the size it would make; `find`, `match`, `gmatch` and
/// `gsub` by their subject's size and their pattern's worst case on it.
/// Method calls (`s:rep(n)`) reach the same functions: a string's
/// metatable indexes this very table.
fn bound_strings(lua: &Lua, string: &mlua::Table, budget: &Rc<Budget>) -> mlua::Result<()> {
    let rep: Function = string.get("rep")?;
    let b = budget.clone();
    let bounded_rep = lua.create_function(move |lua, (s, n, sep): (mlua::String, i64, Option<mlua::String>)| {
        let unit = s.as_bytes().len() + sep.as_ref().map_or(0, |x| x.as_bytes().len());
        let size = (unit as u128).saturating_mul(n.max(0) as u128);
        if size > b.limits.max_string as u128 {
            return Err(b.trip(
                "string limit exceeded: string.rep would make more than the per-request limit",
                caller_line(lua),
            ));
        }
        rep.call::<mlua::String>((s, n, sep))
    })?;
    string.raw_set("rep", bounded_rep)?;

    for name in ["find", "match", "gmatch", "gsub"] {
        let inner: Function = string.get(name)?;
        let b = budget.clone();
        let wrapped = lua.create_function(move |lua, args: MultiValue| {
            let subject = args.front().and_then(|v| v.as_string().map(|s| s.as_bytes().len()));
            let pat = args.get(1).and_then(Value::as_string);
            let plain = name == "find" && args.get(3).is_some_and(|v| v.as_boolean().unwrap_or(false));
            if let (Some(n), Some(p)) = (subject, pat) {
                let p = p.as_bytes();
                // One long C call can run past the deadline; a second may not start.
                if Instant::now() > b.deadline.get() {
                    return Err(b.trip("time limit exceeded", caller_line(lua)));
                }
                if n > b.limits.max_string {
                    return Err(
                        b.trip("string limit exceeded: subject too long for a pattern function", caller_line(lua))
                    );
                }
                if !plain && pattern::cost(&p, n) > b.limits.pattern_steps {
                    return Err(b.trip(
                        "pattern limit exceeded: this pattern's worst case on this subject is too slow \
                         (anchor it with ^, repeat fewer items, or use a plain find)",
                        caller_line(lua),
                    ));
                }
            }
            inner.call::<MultiValue>(args)
        })?;
        string.raw_set(name, wrapped)?;
    }
    Ok(())
}

/// The script's line that called a Rust function.
fn caller_line(lua: &Lua) -> Option<usize> {
    lua.inspect_stack(1, |d| d.current_line()).flatten()
}

/// `pcall` and `xpcall` that give a limit's error back: a script cannot
/// catch its way past its budget.
fn rethrow_limits(lua: &Lua, budget: &Rc<Budget>) -> mlua::Result<()> {
    let globals = lua.globals();
    for name in ["pcall", "xpcall"] {
        let inner: Function = globals.get(name)?;
        let b = budget.clone();
        let wrapped = lua.create_function(move |_, args: MultiValue| {
            let out = inner.call::<MultiValue>(args)?;
            match b.tripped.get() {
                Some(what) => Err(mlua::Error::runtime(what)),
                None => Ok(out),
            }
        })?;
        globals.raw_set(name, wrapped)?;
    }
    Ok(())
}

/// A script loaded in a state of its own, its `handle` at hand (through
/// [`convert::TRAMPOLINE`]).
pub(crate) struct Loaded {
    state: State,
    call: Function,
}

impl Loaded {
    pub(crate) fn new(script: &Script) -> Result<Loaded, ScriptError> {
        let name = &*script.name;
        let state = new_state(&script.limits).map_err(|e| convert::error(name, e, None))?;
        let chunk = state
            .0
            .load(&*script.source)
            .set_name(format!("={name}"))
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| convert::error(name, e, None))?;
        // The chunk's top level runs under the same limits as a request.
        state.1.start();
        chunk.call::<()>(()).map_err(|e| convert::error(name, e, state.1.tripped()))?;
        let handle = match state.0.globals().raw_get::<Value>("handle") {
            Ok(Value::Function(f)) => f,
            _ => {
                return Err(ScriptError {
                    kind: ErrorKind::Runtime,
                    message: format!("{name}: the script must define `function handle(req)`"),
                    line: None,
                });
            }
        };
        let memory = script.limits.memory;
        let call = state
            .0
            .create_function(move |lua, ()| lua.set_memory_limit(memory).map(drop))
            .and_then(|arm| {
                state
                    .0
                    .load(convert::TRAMPOLINE)
                    .set_name("=bifrost")
                    .set_mode(ChunkMode::Text)
                    .call::<Function>((handle, arm))
            })
            .map_err(|e| convert::error(name, e, None))?;
        Ok(Loaded { state, call })
    }

    pub(crate) fn call(&self, script: &Script, req: &Request<'_>) -> Result<Action, ScriptError> {
        let name = &*script.name;
        let State(lua, budget) = &self.state;
        // The request's table and the answer's reading are the router's own
        // bounded work: without a memory limit mlua pushes strings and sets
        // fields unprotected (no pcall per field), ~3x faster. The script
        // itself runs under the limit.
        let limit = budget.limits.memory;
        let unlimited = |on: bool| lua.set_memory_limit(if on { 0 } else { limit }).map(drop);
        budget.start();
        let out = unlimited(true)
            .and_then(|()| convert::call_handle(lua, &self.call, req))
            .map_err(|e| convert::error(name, e, budget.tripped()));
        let _ = unlimited(true);
        let action = out.and_then(|v| convert::action(name, v));
        let _ = unlimited(false);
        action
    }
}
