//! Log lines written in batches, as nginx's `access_log … buffer= flush=`.
//!
//! Written one `write(2)` per line, the router's access log cost ~10 µs of
//! CPU per request on our 2-core VM (a file write; BENCHMARKS.md, "The
//! access log's cost"), a quarter of a proxied request. Here a line is
//! appended to a shared buffer (a lock and a copy), and a thread writes
//! what gathered at most [`WINDOW`] after the first line of a batch: one
//! write per batch under load, and a line is never later than that when
//! idle. (tracing-appender's non-blocking writer was measured in its place:
//! it wakes its writer thread for nearly every line, and saved nothing.)
//!
//! Bounds: a buffer past [`MAX_PENDING`] (the output is stuck, e.g. a full
//! pipe) is written by the line that filled it, so memory stays bounded and
//! the writers wait, as they would on a plain stderr. What is pending is
//! written when the [`Flush`] guard drops (the process ends normally) and
//! before a panic's message; a SIGKILL loses at most one window's lines.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long the first line of a batch waits for others.
pub const WINDOW: Duration = Duration::from_millis(50);
/// Pending bytes past which a writer writes them itself.
pub const MAX_PENDING: usize = 256 * 1024;

struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Told when a line lands in an empty buffer (once per batch).
    first_line: Condvar,
    /// The output and a spare buffer, held while writing: batches leave
    /// in the order they were taken.
    out: Mutex<(Box<dyn Write + Send>, Vec<u8>)>,
    /// No writer thread could start: every line is written at once.
    direct: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while logging must not silence every later line.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn flush(&self) -> io::Result<()> {
        let mut out = lock(&self.out);
        let (w, spare) = &mut *out;
        std::mem::swap(&mut *lock(&self.pending), spare);
        if spare.is_empty() {
            return Ok(());
        }
        let r = w.write_all(spare).and_then(|()| w.flush());
        spare.clear();
        r
    }
}

/// A `MakeWriter` for tracing's layers (and an `io::Write` for anything
/// else): cloning it shares the buffer.
#[derive(Clone)]
pub struct Batched(Arc<Shared>);

/// Writes what is pending when dropped.
#[must_use = "dropping it at once flushes once; hold it until the process ends"]
pub struct Flush(Arc<Shared>);

impl Drop for Flush {
    fn drop(&mut self) {
        let _ = self.0.flush();
    }
}

impl Batched {
    /// Batches to `out`, written by a thread of its own.
    pub fn new(out: impl Write + Send + 'static) -> (Batched, Flush) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            first_line: Condvar::new(),
            out: Mutex::new((Box::new(out), Vec::with_capacity(64 * 1024))),
            direct: AtomicBool::new(false),
        });
        let writer = shared.clone();
        let started = std::thread::Builder::new().name("bifrost-log".into()).spawn(move || {
            loop {
                {
                    let mut pending = lock(&writer.pending);
                    while pending.is_empty() {
                        pending = writer.first_line.wait(pending).unwrap_or_else(|p| p.into_inner());
                    }
                }
                std::thread::sleep(WINDOW);
                let _ = writer.flush();
            }
        });
        if started.is_err() {
            shared.direct.store(true, Ordering::Relaxed);
        }
        let batched = Batched(shared.clone());
        let on_panic = shared.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The lines before the panic come before its message.
            let _ = on_panic.flush();
            previous(info);
        }));
        (batched, Flush(shared))
    }

    /// Batches to stderr.
    pub fn stderr() -> (Batched, Flush) {
        Batched::new(io::stderr())
    }

    /// Batches to stdout.
    pub fn stdout() -> (Batched, Flush) {
        Batched::new(io::stdout())
    }
}

impl Write for Batched {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let full = {
            let mut pending = lock(&self.0.pending);
            if pending.is_empty() {
                self.0.first_line.notify_one();
            }
            pending.extend_from_slice(line);
            pending.len() >= MAX_PENDING || self.0.direct.load(Ordering::Relaxed)
        };
        if full {
            self.0.flush()?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Batched;
    fn make_writer(&'a self) -> Batched {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records what reached it, write by write.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Vec<u8>>>>);
    impl Write for Seen {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(seen: &Seen) -> String {
        String::from_utf8(lock(&seen.0).concat()).expect("utf-8")
    }

    #[test]
    fn lines_written_together_leave_in_fewer_writes_in_order_without_a_flush() {
        let seen = Seen::default();
        let (mut log, _flush) = Batched::new(seen.clone());
        let want: String = (0..100).map(|i| format!("line {i}\n")).collect();
        for i in 0..100 {
            log.write_all(format!("line {i}\n").as_bytes()).expect("write");
        }
        // The thread writes them, a window after the first.
        let mut waited = Duration::ZERO;
        while text(&seen).len() < want.len() && waited < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
            waited += Duration::from_millis(10);
        }
        assert_eq!(text(&seen), want);
        let writes = lock(&seen.0).len();
        assert!(writes < 100, "100 lines went out in {writes} writes");
    }

    #[test]
    fn dropping_the_guard_writes_what_is_pending() {
        let seen = Seen::default();
        let (mut log, flush) = Batched::new(seen.clone());
        log.write_all(b"last words\n").expect("write");
        drop(flush);
        assert_eq!(text(&seen), "last words\n");
    }

    #[test]
    fn a_writer_that_fills_the_buffer_writes_it_before_going_on() {
        let seen = Seen::default();
        let (mut log, _flush) = Batched::new(seen.clone());
        log.write_all(b"first\n").expect("write");
        let big = vec![b'x'; MAX_PENDING];
        log.write_all(&big).expect("write");
        // Out by the time the write returned (by this writer, or by the
        // thread holding the output meanwhile): memory stays bounded.
        assert_eq!(text(&seen).len(), "first\n".len() + MAX_PENDING);
        assert!(lock(&log.0.pending).is_empty());
    }
}
