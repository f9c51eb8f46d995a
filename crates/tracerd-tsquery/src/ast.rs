//! The surface syntax tree of a query, as upstream's `Cardano.Timeseries.Elab.Expr` has it:
//! every node carries the position where it starts.

use std::fmt;
use std::sync::Arc;

/// A position in the query text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Eq,
    NotEq,
    Lt,
    Lte,
    Gt,
    Gte,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Eq => "==",
            BinOp::NotEq => "!=",
            BinOp::Lt => "<",
            BinOp::Lte => "<=",
            BinOp::Gt => ">",
            BinOp::Gte => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

/// A builtin applied to its arguments (arity is checked by the parser, as upstream's is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Fst,
    Snd,
    Min,
    Max,
    Avg,
    Filter,
    Join,
    Map,
    Abs,
    Round,
    Increase,
    Rate,
    AvgOverTime,
    SumOverTime,
    QuantileOverTime,
    Unless,
    ToScalar,
}

impl Builtin {
    /// The builtin named `word`, with its arity.
    pub fn lookup(word: &str) -> Option<(Builtin, usize)> {
        Some(match word {
            "fst" => (Builtin::Fst, 1),
            "snd" => (Builtin::Snd, 1),
            "min" => (Builtin::Min, 1),
            "max" => (Builtin::Max, 1),
            "avg" => (Builtin::Avg, 1),
            "filter" => (Builtin::Filter, 2),
            "join" => (Builtin::Join, 2),
            "map" => (Builtin::Map, 2),
            "abs" => (Builtin::Abs, 1),
            "round" => (Builtin::Round, 1),
            "increase" => (Builtin::Increase, 1),
            "rate" => (Builtin::Rate, 1),
            "avg_over_time" => (Builtin::AvgOverTime, 1),
            "sum_over_time" => (Builtin::SumOverTime, 1),
            "quantile_over_time" => (Builtin::QuantileOverTime, 2),
            "unless" => (Builtin::Unless, 2),
            "to_scalar" => (Builtin::ToScalar, 1),
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Fst => "fst",
            Builtin::Snd => "snd",
            Builtin::Min => "min",
            Builtin::Max => "max",
            Builtin::Avg => "avg",
            Builtin::Filter => "filter",
            Builtin::Join => "join",
            Builtin::Map => "map",
            Builtin::Abs => "abs",
            Builtin::Round => "round",
            Builtin::Increase => "increase",
            Builtin::Rate => "rate",
            Builtin::AvgOverTime => "avg_over_time",
            Builtin::SumOverTime => "sum_over_time",
            Builtin::QuantileOverTime => "quantile_over_time",
            Builtin::Unless => "unless",
            Builtin::ToScalar => "to_scalar",
        }
    }
}

/// A label constraint of a filter `{"k" = "v", "k2" != "v2"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelConstraint {
    pub label: String,
    pub value: String,
    /// `=` when true, `!=` when false.
    pub equal: bool,
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub pos: Pos,
    pub kind: Kind,
    /// Height of the tree under this node (1 for a leaf).
    pub depth: u32,
}

impl Expr {
    /// A node over `kind`, its depth computed from its children's.
    pub fn new(pos: Pos, kind: Kind) -> Expr {
        let depth = 1 + kind.children().iter().map(|c| c.depth).max().unwrap_or(0);
        Expr { pos, kind, depth }
    }
}

impl Kind {
    /// The sub-expressions of a node.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Kind::Let(_, a, b)
            | Kind::App(a, b)
            | Kind::QuantileBy(_, a, b)
            | Kind::Bin(_, a, b)
            | Kind::Pair(a, b) => vec![a, b],
            Kind::Lambda(_, a) => vec![a],
            Kind::Not(a) | Kind::FilterByLabel(_, a) => vec![a],
            Kind::Builtin(_, args) => args.iter().collect(),
            Kind::Range(a, b, c, d) => {
                let mut v: Vec<&Expr> = vec![a, b, c];
                if let Some(d) = d {
                    v.push(d);
                }
                v
            }
            Kind::Earliest(_)
            | Kind::Latest(_)
            | Kind::Metrics
            | Kind::Var(_)
            | Kind::Unit
            | Kind::Number(_)
            | Kind::Str(_)
            | Kind::Duration(_)
            | Kind::Now
            | Kind::Epoch
            | Kind::Bool(_) => Vec::new(),
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `let x = rhs in body`.
    Let(String, Box<Expr>, Box<Expr>),
    /// `\x -> body` (the body is shared with the closures evaluation makes).
    Lambda(String, Arc<Expr>),
    /// `f a` (user application; builtins are [`Kind::Builtin`]).
    App(Box<Expr>, Box<Expr>),
    Var(String),
    Builtin(Builtin, Vec<Expr>),
    /// `quantile_by ("l", ...) k v`.
    QuantileBy(Vec<String>, Box<Expr>, Box<Expr>),
    /// `earliest x` / `latest x`: parsed, as upstream does, but not evaluated.
    Earliest(String),
    Latest(String),
    Metrics,
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `s[a; b]` or `s[a; b : step]`.
    Range(Box<Expr>, Box<Expr>, Box<Expr>, Option<Box<Expr>>),
    /// `v{"k" = "v", ...}`.
    FilterByLabel(Vec<LabelConstraint>, Box<Expr>),
    Pair(Box<Expr>, Box<Expr>),
    Unit,
    Number(f64),
    Str(String),
    /// A duration literal, in milliseconds.
    Duration(u64),
    Now,
    Epoch,
    Bool(bool),
}
