//! The parser: upstream's grammar (`Cardano.Timeseries.Elab.Expr.Parser`, a megaparsec parser)
//! as a backtracking recursive descent. Precedence, loosest first: `let`/`\x ->` (the body
//! extends as far as possible), `||`, `&&`, comparisons, `+ -`, `* /`, application (builtins
//! with their arity, user functions), `!`, then an atom with any number of `[a; b]`,
//! `[a; b : step]` and `{labels}` suffixes. Binary operators associate to the left.
//!
//! Where it differs from upstream (all of it accepting more, never less): whitespace is allowed
//! before the query and before `]`; `now`, `epoch`, `true` and `false` are keywords only as
//! whole words (upstream reads `nowx` as `now` followed by `x`); a duration literal that does
//! not fit in 64 bits of milliseconds is an error rather than wrapping.

use std::sync::Arc;

use crate::ast::{BinOp, Builtin, Expr, Kind, Pos};

mod atoms;

/// The words an unescaped identifier may not be (upstream's `keywords`).
const KEYWORDS: &[&str] = &[
    "let",
    "in",
    "true",
    "false",
    "epoch",
    "now",
    "fst",
    "snd",
    "min",
    "max",
    "avg",
    "filter",
    "join",
    "map",
    "abs",
    "increase",
    "rate",
    "avg_over_time",
    "sum_over_time",
    "quantile_over_time",
    "unless",
    "quantile_by",
    "earliest",
    "latest",
    "to_scalar",
    "metrics",
];

/// Deepest nesting of parentheses, brackets, `let`s and lambdas a query may have.
pub const MAX_DEPTH: usize = 128;

/// Deepest syntax tree a query may have (a long chain `a + b + c + ...` is deep too); it
/// bounds the evaluator's recursion.
pub const MAX_AST_DEPTH: u32 = 400;

/// A query that does not parse: where, what was found there and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct ParseError {
    pub pos: Pos,
    pub message: String,
}

/// Parse a whole query.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let mut p = Parser::new(src);
    p.space();
    let e = p.universe();
    if let Some(e) = e {
        p.space();
        if p.i == p.s.len() {
            return Ok(e);
        }
        p.fail_at(p.i, "end of input");
    }
    Err(p.error())
}

struct Parser {
    s: Vec<char>,
    i: usize,
    line_starts: Vec<usize>,
    /// The furthest position a failure happened at, and what was expected there.
    far: usize,
    expected: Vec<&'static str>,
    custom: Option<(usize, String)>,
    depth: usize,
}

type P<T> = Option<T>;

fn ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn ident_next(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Parser {
    fn new(src: &str) -> Self {
        let s: Vec<char> = src.chars().collect();
        let mut line_starts = vec![0];
        for (i, c) in s.iter().enumerate() {
            if *c == '\n' {
                line_starts.push(i + 1);
            }
        }
        Parser {
            s,
            i: 0,
            line_starts,
            far: 0,
            expected: Vec::new(),
            custom: None,
            depth: 0,
        }
    }

    fn pos_of(&self, i: usize) -> Pos {
        let line = self.line_starts.partition_point(|&s| s <= i);
        let start = self.line_starts[line - 1];
        Pos {
            line: line as u32,
            col: (i - start + 1) as u32,
        }
    }

    fn pos(&self) -> Pos {
        self.pos_of(self.i)
    }

    fn fail_at(&mut self, at: usize, what: &'static str) {
        if at > self.far {
            self.far = at;
            self.expected.clear();
        }
        if at == self.far && !self.expected.contains(&what) {
            self.expected.push(what);
        }
    }

    fn fail<T>(&mut self, what: &'static str) -> P<T> {
        self.fail_at(self.i, what);
        None
    }

    fn error(&self) -> ParseError {
        if let Some((at, msg)) = &self.custom {
            if *at >= self.far {
                return ParseError {
                    pos: self.pos_of(*at),
                    message: msg.clone(),
                };
            }
        }
        let found = match self.s.get(self.far) {
            None => "end of input".to_string(),
            Some(c) => {
                let rest: String = self.s[self.far..].iter().take(12).collect();
                let word: String = rest.split_whitespace().next().unwrap_or("").to_string();
                if word.is_empty() {
                    format!("{c:?}")
                } else {
                    format!("{word:?}")
                }
            }
        };
        let mut message = format!("unexpected {found}");
        if !self.expected.is_empty() {
            message.push_str(", expected ");
            message.push_str(&self.expected.join(" or "));
        }
        ParseError {
            pos: self.pos_of(self.far),
            message,
        }
    }

    fn custom(&mut self, at: usize, msg: String) {
        if self.custom.as_ref().is_none_or(|(a, _)| at >= *a) {
            self.custom = Some((at, msg));
        }
    }

    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    /// Megaparsec's `space`: any whitespace, possibly none.
    fn space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.i += 1;
        }
    }

    /// `space1`: at least one whitespace character.
    fn space1(&mut self) -> P<()> {
        if !self.peek().is_some_and(char::is_whitespace) {
            return self.fail("whitespace");
        }
        self.space();
        Some(())
    }

    fn lit(&mut self, t: &'static str) -> P<()> {
        let n = t.chars().count();
        if self.s.len() >= self.i + n && self.s[self.i..self.i + n].iter().copied().eq(t.chars()) {
            self.i += n;
            Some(())
        } else {
            self.fail(t)
        }
    }

    /// `try (space *> string t)`: whitespace then `t`, or nothing consumed.
    fn spaced_lit(&mut self, t: &'static str) -> P<()> {
        let save = self.i;
        self.space();
        if self.lit(t).is_some() {
            return Some(());
        }
        self.i = save;
        None
    }

    /// The identifier-like word at the cursor, not consumed.
    fn word(&self) -> Option<String> {
        let c = self.peek()?;
        if !ident_start(c) {
            return None;
        }
        let mut j = self.i + 1;
        while self.s.get(j).is_some_and(|c| ident_next(*c)) {
            j += 1;
        }
        Some(self.s[self.i..j].iter().collect())
    }

    /// A whole keyword word.
    fn keyword(&mut self, k: &'static str) -> P<()> {
        if self.word().as_deref() == Some(k) {
            self.i += k.chars().count();
            Some(())
        } else {
            self.fail(k)
        }
    }

    /// A node, unless it would make the tree deeper than [`MAX_AST_DEPTH`].
    fn mk(&mut self, pos: Pos, kind: Kind) -> P<Expr> {
        let e = Expr::new(pos, kind);
        if e.depth > MAX_AST_DEPTH {
            let at = self.i;
            self.custom(
                at,
                format!("query more than {MAX_AST_DEPTH} operations deep"),
            );
            self.far = self.far.max(at);
            return None;
        }
        Some(e)
    }

    fn enter(&mut self) -> P<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let at = self.i;
            self.custom(
                at,
                format!("query nested more than {MAX_DEPTH} levels deep"),
            );
            self.far = self.far.max(at);
            return None;
        }
        Some(())
    }

    // ---- universe: let, lambda, or ----

    fn universe(&mut self) -> P<Expr> {
        self.enter()?;
        let r = self.universe_inner();
        self.depth -= 1;
        r
    }

    fn universe_inner(&mut self) -> P<Expr> {
        let save = self.i;
        if let Some(e) = self.let_expr() {
            return Some(e);
        }
        self.i = save;
        if let Some(e) = self.lambda() {
            return Some(e);
        }
        self.i = save;
        self.or()
    }

    fn let_expr(&mut self) -> P<Expr> {
        let pos = self.pos();
        self.keyword("let")?;
        self.space1()?;
        let x = self.variable_identifier()?;
        self.space();
        self.lit("=")?;
        self.space();
        let rhs = self.universe()?;
        self.space();
        self.keyword("in")?;
        self.space1()?;
        let body = self.universe()?;
        self.mk(pos, Kind::Let(x, Box::new(rhs), Box::new(body)))
    }

    fn lambda(&mut self) -> P<Expr> {
        let pos = self.pos();
        self.lit("\\")?;
        self.space();
        let x = self.variable_identifier()?;
        self.space();
        self.lit("->")?;
        self.space();
        let body = self.universe()?;
        self.mk(pos, Kind::Lambda(x, Arc::new(body)))
    }

    // ---- binary operators, loosest first ----

    fn left_assoc(
        &mut self,
        next: fn(&mut Self) -> P<Expr>,
        ops: &[(&'static str, BinOp)],
    ) -> P<Expr> {
        let pos = self.pos();
        let mut lhs = next(self)?;
        'outer: loop {
            for (sym, op) in ops {
                let save = self.i;
                if self.spaced_lit(sym).is_some() {
                    self.space();
                    match next(self) {
                        Some(rhs) => {
                            lhs = self.mk(pos, Kind::Bin(*op, Box::new(lhs), Box::new(rhs)))?;
                            continue 'outer;
                        }
                        None => {
                            self.i = save;
                            return None;
                        }
                    }
                }
            }
            return Some(lhs);
        }
    }

    fn or(&mut self) -> P<Expr> {
        self.left_assoc(Self::and, &[("||", BinOp::Or)])
    }

    fn and(&mut self) -> P<Expr> {
        self.left_assoc(Self::comp, &[("&&", BinOp::And)])
    }

    fn comp(&mut self) -> P<Expr> {
        self.left_assoc(
            Self::add,
            &[
                ("==", BinOp::Eq),
                ("!=", BinOp::NotEq),
                ("<=", BinOp::Lte),
                (">=", BinOp::Gte),
                ("<", BinOp::Lt),
                (">", BinOp::Gt),
            ],
        )
    }

    fn add(&mut self) -> P<Expr> {
        self.left_assoc(Self::mul, &[("+", BinOp::Add), ("-", BinOp::Sub)])
    }

    fn mul(&mut self) -> P<Expr> {
        self.left_assoc(Self::app, &[("*", BinOp::Mul), ("/", BinOp::Div)])
    }

    // ---- application ----

    fn app(&mut self) -> P<Expr> {
        let pos = self.pos();
        let start = self.i;
        let head = self.head();
        if head.is_none() {
            self.i = start;
        }
        let user = match head {
            Some(_) => None,
            None => Some(self.app_arg()?),
        };
        let mut args = Vec::new();
        loop {
            let save = self.i;
            if self.space1().is_some() {
                if let Some(a) = self.app_arg() {
                    args.push(a);
                    continue;
                }
            }
            self.i = save;
            break;
        }
        match (head, user) {
            (None, Some(f)) => {
                let mut f = f;
                for a in args {
                    f = self.mk(pos, Kind::App(Box::new(f), Box::new(a)))?;
                }
                Some(f)
            }
            (Some(h), _) => self.apply_builtin(pos, start, h, args),
            (None, None) => None,
        }
    }

    fn apply_builtin(&mut self, pos: Pos, start: usize, h: Head, args: Vec<Expr>) -> P<Expr> {
        let (arity, name) = match &h {
            Head::Builtin(b, n) => (*n, b.name()),
            Head::QuantileBy(_) => (2, "quantile_by"),
            Head::Earliest(_) => (0, "earliest"),
            Head::Latest(_) => (0, "latest"),
            Head::Metrics => (0, "metrics"),
        };
        if args.len() != arity {
            let at = self.i;
            self.custom(
                at,
                format!(
                    "wrong number of arguments ({}) for `{name}` at {}, which takes {arity}",
                    args.len(),
                    self.pos_of(start)
                ),
            );
            self.far = self.far.max(at);
            return None;
        }
        let kind = match h {
            Head::Builtin(b, _) => Kind::Builtin(b, args),
            Head::QuantileBy(ls) => {
                let mut it = args.into_iter();
                let (k, v) = (it.next()?, it.next()?);
                Kind::QuantileBy(ls, Box::new(k), Box::new(v))
            }
            Head::Earliest(x) => Kind::Earliest(x),
            Head::Latest(x) => Kind::Latest(x),
            Head::Metrics => Kind::Metrics,
        };
        self.mk(pos, kind)
    }

    fn head(&mut self) -> P<Head> {
        let w = self.word()?;
        let n = w.chars().count();
        if let Some((b, arity)) = Builtin::lookup(&w) {
            self.i += n;
            return Some(Head::Builtin(b, arity));
        }
        match w.as_str() {
            "metrics" => {
                self.i += n;
                Some(Head::Metrics)
            }
            "quantile_by" => {
                self.i += n;
                self.space1()?;
                Some(Head::QuantileBy(self.label_set()?))
            }
            "earliest" | "latest" => {
                self.i += n;
                self.space1()?;
                let x = self.variable_identifier()?;
                Some(if w == "earliest" {
                    Head::Earliest(x)
                } else {
                    Head::Latest(x)
                })
            }
            _ => None,
        }
    }

    fn app_arg(&mut self) -> P<Expr> {
        let save = self.i;
        if let Some(e) = self.not() {
            return Some(e);
        }
        self.i = save;
        self.range()
    }

    fn not(&mut self) -> P<Expr> {
        let pos = self.pos();
        self.lit("!")?;
        self.space();
        let a = self.atom()?;
        self.mk(pos, Kind::Not(Box::new(a)))
    }
}

enum Head {
    Builtin(Builtin, usize),
    QuantileBy(Vec<String>),
    Earliest(String),
    Latest(String),
    Metrics,
}
