//! ALB wildcard patterns: `*` matches zero or more characters, `?` exactly one,
//! and `\*` / `\?` match a literal `*` / `?` (any other `\` is literal).
//!
//! A pattern is compiled once from the config; [`Pattern::matches`] runs per
//! request, so it works on bytes, never allocates, and uses the greedy
//! single-star backtracking algorithm (O(len(s) · len(pattern)) worst case, no
//! exponential blow-up, no regex). Case-insensitive patterns are lowercased at
//! compile time and compared ASCII-case-insensitively, as ALB does.

/// One element of a general pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// A literal byte (already lowercased when the pattern is case-insensitive).
    Lit(u8),
    /// `?`: exactly one character (one UTF-8 scalar, not one byte).
    One,
    /// `*`: zero or more characters; runs of stars are collapsed at compile time.
    Star,
}

/// The shapes that cover almost every real pattern get a direct comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// `*`: everything matches.
    Any,
    /// No wildcard at all.
    Exact(Box<[u8]>),
    /// `foo*`.
    Prefix(Box<[u8]>),
    /// `*foo`.
    Suffix(Box<[u8]>),
    /// Anything else.
    General(Box<[Token]>),
}

/// A compiled wildcard pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    kind: Kind,
    case_insensitive: bool,
}

impl Pattern {
    /// Compiles `pattern`. With `case_insensitive`, ASCII letters match either case.
    pub fn new(pattern: &str, case_insensitive: bool) -> Pattern {
        let tokens = tokenize(pattern.as_bytes(), case_insensitive);
        Pattern {
            kind: classify(tokens),
            case_insensitive,
        }
    }

    /// Whether the whole of `s` matches the pattern.
    pub fn matches(&self, s: &str) -> bool {
        self.matches_bytes(s.as_bytes())
    }

    /// As [`Pattern::matches`], for values that need not be UTF-8 (header
    /// values). `?` then consumes a lead byte and its continuation bytes.
    pub fn matches_bytes(&self, s: &[u8]) -> bool {
        let ci = self.case_insensitive;
        match &self.kind {
            Kind::Any => true,
            Kind::Exact(p) => eq(p, s, ci),
            Kind::Prefix(p) => s.len() >= p.len() && eq(p, &s[..p.len()], ci),
            Kind::Suffix(p) => s.len() >= p.len() && eq(p, &s[s.len() - p.len()..], ci),
            Kind::General(tokens) => general(tokens, s, ci),
        }
    }
}

/// Turns pattern text into tokens, resolving escapes and collapsing `**`.
fn tokenize(p: &[u8], case_insensitive: bool) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        let token = match p[i] {
            b'\\' if matches!(p.get(i + 1), Some(b'*' | b'?')) => {
                i += 1;
                Token::Lit(p[i])
            }
            b'*' if tokens.last() == Some(&Token::Star) => {
                i += 1;
                continue;
            }
            b'*' => Token::Star,
            b'?' => Token::One,
            b if case_insensitive => Token::Lit(b.to_ascii_lowercase()),
            b => Token::Lit(b),
        };
        tokens.push(token);
        i += 1;
    }
    tokens
}

/// Picks the cheapest matcher that is equivalent to `tokens`.
fn classify(tokens: Vec<Token>) -> Kind {
    let lits = |ts: &[Token]| -> Option<Box<[u8]>> {
        ts.iter()
            .map(|t| match t {
                Token::Lit(b) => Some(*b),
                _ => None,
            })
            .collect()
    };
    match tokens.as_slice() {
        [Token::Star] => Kind::Any,
        [Token::Star, rest @ ..] if lits(rest).is_some() => Kind::Suffix(lits(rest).unwrap()),
        [rest @ .., Token::Star] if lits(rest).is_some() => Kind::Prefix(lits(rest).unwrap()),
        ts => match lits(ts) {
            Some(exact) => Kind::Exact(exact),
            None => Kind::General(tokens.into_boxed_slice()),
        },
    }
}

/// Byte-wise equality; `p` is already lowercased when `ci`.
#[inline]
fn eq(p: &[u8], s: &[u8], ci: bool) -> bool {
    if ci {
        p.len() == s.len() && p.iter().zip(s).all(|(a, b)| *a == b.to_ascii_lowercase())
    } else {
        p == s
    }
}

/// The byte length of the character starting at `s[i]`: a lead byte plus its
/// continuation bytes, so `?` means one character even for non-ASCII text and
/// stays well-defined on invalid UTF-8.
#[inline]
fn char_len(s: &[u8], i: usize) -> usize {
    if s[i] < 0x80 {
        return 1;
    }
    1 + s[i + 1..]
        .iter()
        .take(3)
        .take_while(|b| (**b & 0xC0) == 0x80)
        .count()
}

/// Greedy matching with backtracking to the most recent star only. Remembering
/// one star suffices: a later star can absorb anything an earlier one could,
/// which is what keeps this polynomial.
fn general(tokens: &[Token], s: &[u8], ci: bool) -> bool {
    let (mut p, mut i) = (0, 0);
    // (token index after the star, input position the star's match ends at)
    let mut backtrack: Option<(usize, usize)> = None;
    while i < s.len() {
        match tokens.get(p) {
            Some(Token::Star) => {
                p += 1;
                backtrack = Some((p, i));
                continue;
            }
            Some(Token::One) => {
                p += 1;
                i += char_len(s, i);
                continue;
            }
            Some(Token::Lit(b)) => {
                let c = if ci { s[i].to_ascii_lowercase() } else { s[i] };
                if *b == c {
                    p += 1;
                    i += 1;
                    continue;
                }
            }
            None => {}
        }
        // Mismatch: let the last star swallow one more character and retry.
        match backtrack {
            Some((after_star, end)) => {
                let end = end + char_len(s, end);
                backtrack = Some((after_star, end));
                p = after_star;
                i = end;
            }
            None => return false,
        }
    }
    tokens[p..].iter().all(|t| *t == Token::Star)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p, false).matches(s)
    }
    fn mi(p: &str, s: &str) -> bool {
        Pattern::new(p, true).matches(s)
    }

    #[test]
    fn a_case_sensitive_pattern_keeps_its_capitals() {
        assert!(m("/Admin/*", "/Admin/x"));
        assert!(!m("/Admin/*", "/admin/x"));
        assert!(m("/A?min", "/Admin"));
        assert!(!m("/A?min", "/admin"));
    }

    #[test]
    fn a_character_is_its_lead_byte_and_its_continuations_only() {
        // An ASCII byte is one character, whatever follows it.
        assert_eq!(char_len(b"a\x80\x80", 0), 1);
        // A stray continuation byte leads its own run.
        assert_eq!(char_len(b"\x80\x80", 0), 2);
        assert_eq!(char_len("é".as_bytes(), 0), 2);
        assert_eq!(char_len("€x".as_bytes(), 0), 3);
    }

    #[test]
    fn fast_paths_are_chosen() {
        assert_eq!(Pattern::new("*", false).kind, Kind::Any);
        assert_eq!(Pattern::new("***", false).kind, Kind::Any);
        assert!(matches!(Pattern::new("abc", false).kind, Kind::Exact(_)));
        assert!(matches!(Pattern::new("ab*", false).kind, Kind::Prefix(_)));
        assert!(matches!(Pattern::new("*ab", false).kind, Kind::Suffix(_)));
        assert!(matches!(Pattern::new("a\\*", false).kind, Kind::Exact(_)));
        assert!(matches!(Pattern::new("*a*", false).kind, Kind::General(_)));
        assert!(matches!(Pattern::new("a?", false).kind, Kind::General(_)));
    }

    #[test]
    fn exact() {
        assert!(m("/api", "/api"));
        assert!(!m("/api", "/api/"));
        assert!(!m("/api", "/ap"));
        assert!(!m("/api", "/API"));
        assert!(mi("api.example.com", "API.Example.COM"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn star_matches_empty_and_anything() {
        assert!(m("*", ""));
        assert!(m("*", "anything at all"));
        assert!(m("/api/*", "/api/"));
        assert!(m("/api/*", "/api/v1/users"));
        assert!(!m("/api/*", "/api"));
        assert!(m("*.png", ".png"));
        assert!(m("*.png", "/img/a.png"));
        assert!(!m("*.png", "/img/a.PNG"));
        assert!(mi("*.png", "/img/a.PNG"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("a**b", "ab"));
    }

    #[test]
    fn question_mark_is_exactly_one_character() {
        assert!(m("/img/??.png", "/img/ab.png"));
        assert!(!m("/img/??.png", "/img/a.png"));
        assert!(!m("/img/??.png", "/img/abc.png"));
        assert!(!m("?", ""));
        assert!(m("?", "x"));
        assert!(!m("?", "xy"));
        // One character, not one byte.
        assert!(m("a?c", "aéc"));
        assert!(m("a?c", "a€c"));
        assert!(!m("a??c", "aéc"));
        assert!(m("*?", "é"));
    }

    #[test]
    fn subdomain_wildcard() {
        assert!(mi("*.example.com", "a.example.com"));
        assert!(mi("*.example.com", "a.b.Example.com"));
        assert!(!mi("*.example.com", "example.com"));
        assert!(!mi("*.example.com", "aexample.com"));
        assert!(mi("api-?.example.com", "API-3.example.com"));
    }

    #[test]
    fn escapes_match_literally() {
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(!m("a\\*b", "ab"));
        assert!(m("a\\?", "a?"));
        assert!(!m("a\\?", "ab"));
        assert!(m("*\\**", "x*y"));
        assert!(!m("*\\**", "xy"));
        assert!(m("\\*", "*"));
        // A backslash before anything else is itself literal.
        assert!(m("a\\b", "a\\b"));
        assert!(m("a\\", "a\\"));
    }

    #[test]
    fn case_insensitivity_is_ascii_only_and_pattern_side_lowered() {
        assert!(mi("CaNaRy*", "canary-1"));
        assert!(mi("canary*", "CANARY-1"));
        assert!(mi("*X?z", "aaxYZ"));
        assert!(!m("canary*", "CANARY-1"));
        assert!(!mi("é", "É"));
    }

    #[test]
    fn general_backtracking() {
        assert!(m("*a*b", "xaxxb"));
        assert!(m("*ab*", "xxaab"));
        assert!(m("a*a*a", "aaa"));
        assert!(!m("a*a*a", "aa"));
        assert!(m("*?*", "x"));
        assert!(!m("*?*", ""));
        assert!(m("?*", "x"));
        assert!(m("*mississippi*", "xmississippix"));
        assert!(m("*issip*", "mississippi"));
        assert!(!m("*issipx*", "mississippi"));
    }

    #[test]
    fn bytes_api_tolerates_invalid_utf8() {
        let p = Pattern::new("a?c", false);
        assert!(p.matches_bytes(b"a\xffc"));
        assert!(Pattern::new("*c", false).matches_bytes(b"\xe0c"));
        assert!(Pattern::new("*c*", false).matches_bytes(b"\xe0c"));
    }

    #[test]
    fn a_pathological_pattern_finishes_without_exponential_backtracking() {
        // Polynomial matching takes milliseconds here; backtracking into
        // every star would take longer than the universe has. The wait is
        // for the answers, never a measure of speed: only a matcher that
        // does not finish at all can outlast it.
        let (done, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let s = "a".repeat(10_000);
            let _ = done.send([
                m("*a*a*a*a*a*b", &s),
                m("*a?a*a?a*a*b", &s),
                m("*a*a*a*a*a*", &s),
            ]);
        });
        let answers = answers
            .recv_timeout(Duration::from_secs(60))
            .expect("the matcher finishes");
        assert_eq!(answers, [false, false, true]);
    }

    /// Reference semantics by dynamic programming over characters.
    fn reference(p: &str, s: &str, ci: bool) -> bool {
        let mut toks = Vec::new();
        let mut it = p.chars().peekable();
        while let Some(c) = it.next() {
            toks.push(match c {
                '\\' if matches!(it.peek(), Some('*' | '?')) => Some(it.next().unwrap()),
                '*' => None,
                '?' => Some('\0'),
                c => Some(c),
            });
        }
        let s: Vec<char> = s.chars().collect();
        let fold = |c: char| if ci { c.to_ascii_lowercase() } else { c };
        // dp[j]: the tokens so far match s[..j].
        let mut dp = vec![false; s.len() + 1];
        dp[0] = true;
        for t in &toks {
            let mut next = vec![false; s.len() + 1];
            for j in 0..=s.len() {
                next[j] = match t {
                    None => dp[j] || (j > 0 && next[j - 1]),
                    Some('\0') => j > 0 && dp[j - 1],
                    Some(c) => j > 0 && dp[j - 1] && fold(*c) == fold(s[j - 1]),
                };
            }
            dp = next;
        }
        dp[s.len()]
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_reference(
            p in "[abAé*?\\\\]{0,8}",
            s in "[abAé*?\\\\]{0,12}",
            ci: bool,
        ) {
            proptest::prop_assert_eq!(
                Pattern::new(&p, ci).matches(&s),
                reference(&p, &s, ci),
                "pattern {:?} input {:?} ci {}", p, s, ci
            );
        }
    }
}
