//! The parser's atoms and their suffixes: numbers, durations, strings, identifiers,
//! tuples and parenthesised queries, then `[a; b]`, `[a; b : step]` and `{labels}`.

use super::{ident_start, Parser, KEYWORDS, P};
use crate::ast::{Expr, Kind, LabelConstraint};

impl Parser {
    // ---- suffixes: [a; b], [a; b : c], {constraints} ----

    pub(super) fn range(&mut self) -> P<Expr> {
        let pos = self.pos();
        let mut e = self.atom()?;
        loop {
            let save = self.i;
            self.space();
            let at = self.i;
            if let Some((a, b, c)) = self.bracket() {
                e = self.mk(
                    pos,
                    Kind::Range(Box::new(e), Box::new(a), Box::new(b), c.map(Box::new)),
                )?;
                continue;
            }
            self.i = at;
            if let Some(cs) = self.label_constraints() {
                e = self.mk(pos, Kind::FilterByLabel(cs, Box::new(e)))?;
                continue;
            }
            self.i = save;
            return Some(e);
        }
    }

    fn bracket(&mut self) -> P<(Expr, Expr, Option<Expr>)> {
        self.lit("[")?;
        self.enter()?;
        let r = (|| {
            self.space();
            let a = self.universe()?;
            self.space();
            self.lit(";")?;
            self.space();
            let b = self.universe()?;
            self.space();
            let c = if self.lit(":").is_some() {
                self.space();
                let c = self.universe()?;
                self.space();
                Some(c)
            } else {
                None
            };
            self.lit("]")?;
            Some((a, b, c))
        })();
        self.depth -= 1;
        r
    }

    fn label_constraints(&mut self) -> P<Vec<LabelConstraint>> {
        self.lit("{")?;
        self.space();
        let mut out = Vec::new();
        if self.peek() == Some('"') {
            loop {
                let label = self.text()?;
                self.space();
                let equal = if self.lit("=").is_some() {
                    true
                } else {
                    self.lit("!=")?;
                    false
                };
                self.space();
                let value = self.text()?;
                out.push(LabelConstraint {
                    label,
                    value,
                    equal,
                });
                if self.spaced_lit(",").is_some() {
                    self.space();
                    continue;
                }
                break;
            }
        }
        self.space();
        self.lit("}")?;
        Some(out)
    }

    pub(super) fn label_set(&mut self) -> P<Vec<String>> {
        self.lit("(")?;
        self.space();
        let mut out = Vec::new();
        if self.peek() == Some('"') {
            loop {
                out.push(self.text()?);
                if self.spaced_lit(",").is_some() {
                    self.space();
                    continue;
                }
                break;
            }
        }
        self.space();
        self.lit(")")?;
        out.sort();
        out.dedup();
        Some(out)
    }

    // ---- atoms ----

    pub(super) fn atom(&mut self) -> P<Expr> {
        let pos = self.pos();
        let save = self.i;
        let kind = match self.peek() {
            Some('(') => return self.tuple(),
            Some('"') => Kind::Str(self.text()?),
            Some('`') => Kind::Var(self.escaped_identifier()?),
            Some(c) if ident_start(c) => {
                let w = self.word()?;
                let n = w.chars().count();
                let k = match w.as_str() {
                    "epoch" => Kind::Epoch,
                    "now" => Kind::Now,
                    "true" => Kind::Bool(true),
                    "false" => Kind::Bool(false),
                    _ if KEYWORDS.contains(&w.as_str()) => return self.fail("identifier"),
                    _ => Kind::Var(w),
                };
                self.i += n;
                k
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => {
                if let Some(d) = self.duration() {
                    Kind::Duration(d)
                } else {
                    self.i = save;
                    Kind::Number(self.number()?)
                }
            }
            _ => return self.fail("an expression"),
        };
        self.mk(pos, kind)
    }

    fn tuple(&mut self) -> P<Expr> {
        let pos = self.pos();
        self.lit("(")?;
        self.enter()?;
        let r = (|| {
            self.space();
            let mut items = Vec::new();
            if let Some(first) = self.universe() {
                items.push(first);
                while self.spaced_lit(",").is_some() {
                    self.space();
                    items.push(self.universe()?);
                }
            } else if self.peek() != Some(')') {
                return None;
            }
            self.space();
            self.lit(")")?;
            Some(items)
        })();
        self.depth -= 1;
        let mut items = r?;
        Some(match items.len() {
            0 => self.mk(pos, Kind::Unit)?,
            1 => items.pop()?,
            _ => {
                // (a, b, c) is (a, (b, c)).
                let mut acc = items.pop()?;
                while let Some(x) = items.pop() {
                    acc = self.mk(pos, Kind::Pair(Box::new(x), Box::new(acc)))?;
                }
                acc
            }
        })
    }

    fn digits(&mut self) -> P<String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i == start {
            return self.fail("a digit");
        }
        Some(self.s[start..self.i].iter().collect())
    }

    /// `<int>ms`, `<int>s`, `<int>m`, `<int>h`, not followed by a letter.
    fn duration(&mut self) -> P<u64> {
        let at = self.i;
        let n = self.digits()?;
        let (unit, mult) = if self.lit("ms").is_some() {
            ("ms", 1u64)
        } else if self.lit("s").is_some() {
            ("s", 1000)
        } else if self.lit("m").is_some() {
            ("m", 60_000)
        } else if self.lit("h").is_some() {
            ("h", 3_600_000)
        } else {
            return None;
        };
        if self.peek().is_some_and(char::is_alphabetic) {
            return None;
        }
        match n.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
            Some(ms) => Some(ms),
            None => {
                self.custom(
                    at,
                    format!("duration {n}{unit} does not fit in 64 bits of milliseconds"),
                );
                self.far = self.far.max(at);
                None
            }
        }
    }

    /// `signed (pure ()) scientific`: an optional sign right before digits, an optional
    /// fraction and an optional exponent.
    fn number(&mut self) -> P<f64> {
        let start = self.i;
        if matches!(self.peek(), Some('-' | '+')) {
            self.i += 1;
        }
        self.digits()?;
        let save = self.i;
        if self.lit(".").is_some() && self.digits().is_none() {
            self.i = save;
        }
        let save = self.i;
        if matches!(self.peek(), Some('e' | 'E')) {
            self.i += 1;
            if matches!(self.peek(), Some('-' | '+')) {
                self.i += 1;
            }
            if self.digits().is_none() {
                self.i = save;
            }
        }
        let text: String = self.s[start..self.i].iter().collect();
        match text.parse::<f64>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.i = start;
                self.fail("a number")
            }
        }
    }

    fn text(&mut self) -> P<String> {
        self.lit("\"")?;
        let start = self.i;
        while self.peek().is_some_and(|c| c != '"' && !c.is_control()) {
            self.i += 1;
        }
        let t: String = self.s[start..self.i].iter().collect();
        self.lit("\"")?;
        Some(t)
    }

    fn escaped_identifier(&mut self) -> P<String> {
        self.lit("`")?;
        let start = self.i;
        while self.peek().is_some_and(|c| c != '`' && !c.is_control()) {
            self.i += 1;
        }
        let t: String = self.s[start..self.i].iter().collect();
        self.lit("`")?;
        Some(t)
    }

    pub(super) fn variable_identifier(&mut self) -> P<String> {
        if self.peek() == Some('`') {
            return self.escaped_identifier();
        }
        match self.word() {
            Some(w) if !KEYWORDS.contains(&w.as_str()) => {
                self.i += w.chars().count();
                Some(w)
            }
            _ => self.fail("identifier"),
        }
    }
}
