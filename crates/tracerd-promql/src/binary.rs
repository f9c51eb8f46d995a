//! Binary operators: arithmetic, comparison (with `bool`), set operators, and vector
//! matching with `on`/`ignoring`/`group_left`/`group_right`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use promql_parser::parser::token::{self as tk, TokenType};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use crate::eval::Evaluator;
use crate::model::{Labels, QueryError};
use crate::value::{self, Elem, Val};

fn is_comparison(op: TokenType) -> bool {
    op.is_comparison_operator()
}

/// `op` on two floats: the value and, for comparisons, whether it holds.
fn apply(op: TokenType, l: f64, r: f64) -> Result<(f64, bool), QueryError> {
    let id = op.id();
    let v = match id {
        tk::T_ADD => l + r,
        tk::T_SUB => l - r,
        tk::T_MUL => l * r,
        tk::T_DIV => l / r,
        tk::T_MOD => l % r,
        tk::T_POW => l.powf(r),
        tk::T_ATAN2 => l.atan2(r),
        tk::T_EQLC => return Ok((l, l == r)),
        tk::T_NEQ => return Ok((l, l != r)),
        tk::T_GTR => return Ok((l, l > r)),
        tk::T_LSS => return Ok((l, l < r)),
        tk::T_GTE => return Ok((l, l >= r)),
        tk::T_LTE => return Ok((l, l <= r)),
        _ => {
            return Err(QueryError::bad_data(format!(
                "operator {op} not allowed here"
            )))
        }
    };
    Ok((v, true))
}

pub(crate) fn eval_binary(ev: &mut Evaluator, b: &BinaryExpr, ts: i64) -> Result<Val, QueryError> {
    let op = b.op;
    let return_bool = b.modifier.as_ref().map(|m| m.return_bool).unwrap_or(false);
    let lhs = ev.eval(&b.lhs, ts)?;
    let rhs = ev.eval(&b.rhs, ts)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => {
            let (v, keep) = apply(op, l, r)?;
            if is_comparison(op) {
                // The parser only allows scalar comparisons with `bool`.
                return Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }));
            }
            Ok(Val::Scalar(v))
        }
        (Val::Vector(v), Val::Scalar(s)) => vector_scalar(op, v, s, false, return_bool),
        (Val::Scalar(s), Val::Vector(v)) => vector_scalar(op, v, s, true, return_bool),
        (Val::Vector(mut l), Val::Vector(mut r)) => {
            ev.settle(&mut l);
            ev.settle(&mut r);
            let (card, matching) = match &b.modifier {
                Some(m) => (m.card.clone(), m.matching.clone()),
                None => (VectorMatchCardinality::OneToOne, None),
            };
            let (names, include): (Vec<String>, bool) = match &matching {
                Some(LabelModifier::Include(ls)) => (ls.labels.clone(), true),
                Some(LabelModifier::Exclude(ls)) => (ls.labels.clone(), false),
                None => (Vec::new(), false),
            };
            match op.id() {
                tk::T_LAND | tk::T_LOR | tk::T_LUNLESS => {
                    Ok(Val::Vector(set_op(op, l, r, &names, include)))
                }
                _ => Ok(Val::Vector(vector_vector(
                    op,
                    l,
                    r,
                    &card,
                    &names,
                    include,
                    return_bool,
                )?)),
            }
        }
        (l, r) => Err(QueryError::bad_data(format!(
            "binary operator {op} not defined between {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    op: TokenType,
    v: Vec<Elem>,
    s: f64,
    swap: bool,
    return_bool: bool,
) -> Result<Val, QueryError> {
    let mut out = Vec::with_capacity(v.len());
    for mut e in v {
        let (l, r) = if swap { (s, e.v) } else { (e.v, s) };
        let (val, keep) = apply(op, l, r)?;
        if is_comparison(op) {
            if return_bool {
                e.v = if keep { 1.0 } else { 0.0 };
                e.drop_name = true;
            } else if !keep {
                continue;
            }
        } else {
            e.v = val;
            e.drop_name = true;
        }
        out.push(e);
    }
    Ok(Val::Vector(out))
}

fn set_op(op: TokenType, l: Vec<Elem>, r: Vec<Elem>, names: &[String], include: bool) -> Vec<Elem> {
    let sig = |e: &Elem| value::signature(&e.labels, names, include);
    match op.id() {
        tk::T_LAND => {
            let rs: HashSet<Labels> = r.iter().map(sig).collect();
            l.into_iter().filter(|e| rs.contains(&sig(e))).collect()
        }
        tk::T_LUNLESS => {
            let rs: HashSet<Labels> = r.iter().map(sig).collect();
            l.into_iter().filter(|e| !rs.contains(&sig(e))).collect()
        }
        _ => {
            let ls: HashSet<Labels> = l.iter().map(sig).collect();
            let mut out = l;
            out.extend(r.into_iter().filter(|e| !ls.contains(&sig(e))));
            out
        }
    }
}

fn fmt_labels(l: &Labels) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn vector_vector(
    op: TokenType,
    l: Vec<Elem>,
    r: Vec<Elem>,
    card: &VectorMatchCardinality,
    names: &[String],
    include: bool,
    return_bool: bool,
) -> Result<Vec<Elem>, QueryError> {
    let (extra, one_to_many) = match card {
        VectorMatchCardinality::ManyToOne(ls) => (ls.labels.clone(), false),
        VectorMatchCardinality::OneToMany(ls) => (ls.labels.clone(), true),
        _ => (Vec::new(), false),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    // The "one" side is rhs unless group_right.
    let (many, one) = if one_to_many { (r, l) } else { (l, r) };
    let mut one_by_sig: HashMap<Labels, usize> = HashMap::new();
    for (i, e) in one.iter().enumerate() {
        let s = value::signature(&e.labels, names, include);
        if one_by_sig.insert(s.clone(), i).is_some() {
            let side = if one_to_many { "left" } else { "right" };
            return Err(QueryError::execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                fmt_labels(&s),
                fmt_labels(&one[one_by_sig[&s]].labels),
                fmt_labels(&e.labels)
            )));
        }
    }
    let drop = !is_comparison(op) || return_bool;
    let mut out = Vec::new();
    let mut seen_one_to_one: HashMap<Labels, ()> = HashMap::new();
    let mut seen_result: HashSet<Arc<Labels>> = HashSet::new();
    for m in many {
        let s = value::signature(&m.labels, names, include);
        let Some(&oi) = one_by_sig.get(&s) else {
            continue;
        };
        let o = &one[oi];
        if one_to_one && seen_one_to_one.insert(s.clone(), ()).is_some() {
            return Err(QueryError::execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
            ));
        }
        let (lv, rv) = if one_to_many { (o.v, m.v) } else { (m.v, o.v) };
        let (val, keep) = apply(op, lv, rv)?;
        let value = if is_comparison(op) {
            if return_bool {
                if keep {
                    1.0
                } else {
                    0.0
                }
            } else if !keep {
                continue;
            } else {
                val
            }
        } else {
            val
        };
        // Result labels.
        let mut labels: Labels = (*m.labels).clone();
        if drop {
            labels.retain(|(n, _)| n != value::METRIC_NAME);
        }
        if one_to_one {
            if include {
                labels.retain(|(n, _)| names.iter().any(|x| x == n));
            } else {
                labels.retain(|(n, _)| !names.iter().any(|x| x == n));
            }
        }
        for ln in &extra {
            match value::get(&o.labels, ln) {
                Some(v) => value::set(&mut labels, ln, v),
                None => value::set(&mut labels, ln, ""),
            }
        }
        let labels = Arc::new(labels);
        if !one_to_one && !seen_result.insert(labels.clone()) {
            return Err(QueryError::execution(
                "multiple matches for labels: grouping labels must ensure unique matches",
            ));
        }
        out.push(Elem {
            labels,
            v: value,
            drop_name: false,
        });
    }
    Ok(out)
}
