//! The in-memory store the scripts load into.

use tracerd_promql::{Grid, Matcher, QueryError, Queryable, Sample, Series};

/// The in-memory store the scripts load into.
#[derive(Default)]
pub(crate) struct Mem {
    pub(crate) series: Vec<Series>,
}

impl Queryable for Mem {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Series>, QueryError> {
        let res: Vec<(Matcher, Option<regex::Regex>)> = matchers
            .iter()
            .map(|m| {
                let re = match m.op {
                    tracerd_promql::MatchOp::Re | tracerd_promql::MatchOp::NotRe => {
                        Some(m.compile()?)
                    }
                    _ => None,
                };
                Ok((m.clone(), re))
            })
            .collect::<Result<_, QueryError>>()?;
        let mut out = Vec::new();
        'next: for s in &self.series {
            for (m, re) in &res {
                let v = s
                    .labels
                    .iter()
                    .find(|(n, _)| *n == m.name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                let ok = match (m.op, re) {
                    (tracerd_promql::MatchOp::Re, Some(r)) => r.is_match(v),
                    (tracerd_promql::MatchOp::NotRe, Some(r)) => !r.is_match(v),
                    _ => m.matches(v),
                };
                if !ok {
                    continue 'next;
                }
            }
            let samples: Vec<Sample> = s
                .samples
                .iter()
                .filter(|x| x.t >= mint && x.t <= maxt)
                .copied()
                .collect();
            out.push(Series {
                labels: s.labels.clone(),
                samples,
            });
        }
        Ok(out)
    }

    /// Only the samples the grid reads, as a store that seeks to them would answer: the
    /// whole suite then checks the evaluator's plan of every instant selector's grid.
    fn select_latest(&self, ms: &[Matcher], g: &Grid) -> Result<Vec<Series>, QueryError> {
        let (mint, maxt) = g.window();
        let mut out = self.select(ms, mint, maxt)?;
        for s in out.iter_mut() {
            s.samples = g.latest(s.samples.iter().copied());
        }
        out.retain(|s| !s.samples.is_empty());
        Ok(out)
    }
}
