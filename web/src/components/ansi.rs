//! ANSI SGR colors in log lines → styled spans. Builds print colors
//! (cargo, npm, pytest); everything else (cursor moves) is dropped.

/// A run of text with one style.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub text: String,
    /// CSS classes: `fg-1` … `fg-15`, `bold`, `dim`, `italic`, `underline`.
    pub class: String,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    fg: Option<u8>,
    bold: bool,
    dim: bool,
    italic: bool,
    underline: bool,
}

impl Style {
    fn class(&self) -> String {
        let mut c = Vec::new();
        if let Some(f) = self.fg {
            c.push(format!("fg-{f}"));
        }
        for (on, name) in
            [(self.bold, "bold"), (self.dim, "dim"), (self.italic, "italic"), (self.underline, "underline")]
        {
            if on {
                c.push(name.to_string());
            }
        }
        c.join(" ")
    }

    fn apply(&mut self, params: &str) {
        let codes: Vec<u16> =
            if params.is_empty() { vec![0] } else { params.split(';').map(|p| p.parse().unwrap_or(0)).collect() };
        let mut i = 0;
        while i < codes.len() {
            match codes[i] {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                c @ 30..=37 => self.fg = Some((c - 30) as u8),
                39 => self.fg = None,
                c @ 90..=97 => self.fg = Some((c - 90 + 8) as u8),
                // 256-color and truecolor: keep the basic ones, skip the rest.
                38 => match codes.get(i + 1) {
                    Some(5) => {
                        self.fg = codes.get(i + 2).filter(|c| **c < 16).map(|c| *c as u8);
                        i += 2;
                    }
                    Some(2) => {
                        self.fg = None;
                        i += 4;
                    }
                    _ => {}
                },
                48 => match codes.get(i + 1) {
                    Some(5) => i += 2,
                    Some(2) => i += 4,
                    _ => {}
                },
                _ => {}
            }
            i += 1;
        }
    }
}

/// Splits a line into styled spans.
pub fn parse(line: &str) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    let mut style = Style::default();
    let mut text = String::new();
    let mut chars = line.chars().peekable();
    let flush = |text: &mut String, style: &Style, out: &mut Vec<Span>| {
        if !text.is_empty() {
            out.push(Span { text: std::mem::take(text), class: style.class() });
        }
    };
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            // Other control characters (BEL, backspace, C1) show as nothing.
            if !c.is_control() || c == '\t' {
                text.push(c);
            }
            continue;
        }
        match chars.peek() {
            Some('[') => {}
            // OSC, DCS, SOS, PM, APC: their payload is not text.
            Some(']' | 'P' | 'X' | '^' | '_') => {
                while let Some(n) = chars.next() {
                    if n == '\u{7}' || (n == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
                continue;
            }
            _ => {
                chars.next();
                continue;
            }
        }
        chars.next();
        let mut params = String::new();
        let mut end = None;
        for p in chars.by_ref() {
            if p.is_ascii_digit() || p == ';' || p == '?' {
                params.push(p);
            } else {
                end = Some(p);
                break;
            }
        }
        if end == Some('m') {
            flush(&mut text, &style, &mut out);
            style.apply(&params);
        }
    }
    flush(&mut text, &style, &mut out);
    out
}

/// The line without escape sequences (what search matches against).
pub fn plain(line: &str) -> String {
    parse(line).into_iter().map(|s| s.text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colors_and_resets() {
        let spans = parse("\u{1b}[1;32m   Compiling\u{1b}[0m serde v1");
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0], Span { text: "   Compiling".into(), class: "fg-2 bold".into() });
        assert_eq!(spans[1], Span { text: " serde v1".into(), class: String::new() });
    }

    #[test]
    fn only_colours_render_never_terminal_control() {
        let hostile = "a\u{1b}]52;c;ZXZpbA==\u{7}b\u{1b}]0;pwned\u{1b}\\c\u{1b}[2J\u{1b}[Hd\u{7}\u{8}e\u{1b}cf";
        let spans = parse(hostile);
        assert_eq!(plain(hostile), "abcdef");
        assert!(spans.iter().all(|s| s.class.is_empty()), "{spans:?}");
        assert!(spans.iter().all(|s| !s.text.chars().any(char::is_control)), "{spans:?}");
    }

    #[test]
    fn bright_and_256_colors_and_cursor_moves() {
        let spans = parse("\u{1b}[91merr\u{1b}[38;5;4mblue\u{1b}[2Kx\u{1b}[38;2;1;2;3mt");
        let got: Vec<(&str, &str)> = spans.iter().map(|s| (s.text.as_str(), s.class.as_str())).collect();
        assert_eq!(got, [("err", "fg-9"), ("bluex", "fg-4"), ("t", "")]);
        assert_eq!(plain("\u{1b}[31mred\u{1b}[0m plain"), "red plain");
    }
}
