//! The worst case of a Lua pattern on a subject, in matcher steps. Lua's
//! matcher backtracks: each variable-length item (`*`, `+`, `-`, a `%b`
//! balance, a back-reference) can retry every length up to the subject's,
//! and an unanchored pattern is tried at every start. So a pattern with k
//! such items on n bytes can take about n^(k+1) steps, in one C call the
//! instruction hook never interrupts — `(".-"):rep(8) .. "x"` on a few
//! kilobytes runs for years. The wrappers refuse a call whose bound is over
//! the budget before it starts. The bound is loose for patterns whose items
//! cannot overlap, but never too low.

/// Upper bound of the steps `pattern` takes on a subject of `n` bytes.
pub fn cost(pattern: &[u8], n: usize) -> f64 {
    let Shape { exponent, factor } = shape(pattern);
    factor * ((n as f64) + 1.0).powi(exponent)
}

/// A pattern's bound on a subject of n bytes is `factor × (n + 1)^exponent`;
/// the sandbox learns a pattern's shape once and applies it to each subject.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub exponent: i32,
    pub factor: f64,
}

/// The shape of `pattern`'s bound (see [`cost`]).
pub fn shape(pattern: &[u8]) -> Shape {
    let (anchored, mut i) = if pattern.first() == Some(&b'^') { (true, 1) } else { (false, 0) };
    let mut exponent: i32 = if anchored { 0 } else { 1 };
    let mut factor = 1.0_f64;
    while i < pattern.len() {
        let single = match pattern[i] {
            b'(' | b')' => {
                i += 1;
                continue;
            }
            b'$' if i + 1 == pattern.len() => {
                i += 1;
                continue;
            }
            b'%' => match pattern.get(i + 1) {
                Some(b'b') => {
                    // %bxy: a balanced run, any length.
                    exponent += 1;
                    i += 4;
                    continue;
                }
                Some(b'f') => {
                    // %f[set]: a frontier, zero width.
                    i = skip_set(pattern, i + 2);
                    continue;
                }
                Some(d) if d.is_ascii_digit() => {
                    // A back-reference: compares a capture's length.
                    exponent += 1;
                    i += 2;
                    continue;
                }
                _ => i + 2,
            },
            b'[' => skip_set(pattern, i),
            _ => i + 1,
        };
        i = single;
        match pattern.get(i) {
            Some(b'*' | b'+' | b'-') => {
                exponent += 1;
                i += 1;
            }
            Some(b'?') => {
                factor *= 2.0;
                i += 1;
            }
            _ => {}
        }
    }
    Shape { exponent, factor }
}

/// The index after a `[set]` starting at `i` (or the pattern's end).
fn skip_set(p: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    if p.get(j) == Some(&b'^') {
        j += 1;
    }
    // A `]` first in the set is a member, not its end.
    if p.get(j) == Some(&b']') {
        j += 1;
    }
    while j < p.len() {
        match p[j] {
            b'%' => j += 2,
            b']' => return j + 1,
            _ => j += 1,
        }
    }
    p.len()
}

#[cfg(test)]
mod tests {
    use super::cost;

    #[test]
    fn each_repeated_item_multiplies_the_bound_by_the_subjects_length() {
        let n = 99;
        assert_eq!(cost(b"^/api/", n), 1.0, "anchored, no repetition: one try");
        assert_eq!(cost(b"/admin", n), 100.0, "unanchored: a try per start");
        assert_eq!(cost(b"user=(%w+)", n), 100.0 * 100.0);
        assert_eq!(cost(b"^(%w+)=(%w+)$", n), 100.0 * 100.0);
        assert_eq!(cost(b".-.-.-x", n), 100f64.powi(4));
        assert_eq!(cost(b"^a?b?", n), 4.0);
        assert_eq!(cost(b"%bxy", n), 100.0 * 100.0);
    }

    #[test]
    fn sets_and_escapes_are_single_items() {
        assert_eq!(cost(b"^[*+-]", 9), 1.0, "quantifier characters inside a set repeat nothing");
        assert_eq!(cost(b"^%*%-", 9), 1.0, "escaped quantifiers are literals");
        assert_eq!(cost(b"^[]%]]+", 9), 10.0, "a ] first in a set is a member");
        assert_eq!(cost(b"^%f[%w]%w+", 9), 10.0, "a frontier is zero width");
    }
}
