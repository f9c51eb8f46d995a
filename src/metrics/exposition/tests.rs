//! Exposition tests: exact output for every kind of value, cardano-tracer's naming, HELP
//! lookup, negotiation, and adversarial names and values.

use super::*;
use proptest::prelude::*;

fn metrics(naming: &Naming, list: &[(&str, MetricValue)]) -> Vec<(Arc<MetricName>, MetricValue)> {
    list.iter()
        .map(|(k, v)| (naming.name(k), v.clone()))
        .collect()
}

fn render(format: Format, m: &[(Arc<MetricName>, MetricValue)]) -> String {
    render_node(format, m.iter().map(|(n, v)| (n, v))).0
}

#[test]
fn sanitises_as_cardano_tracer() {
    let s = |n: &str| sanitise(n, false).map(String::from);
    assert_eq!(
        s("cardano.node.metrics.blockNum_int").as_deref(),
        Some("cardano_node_metrics_blockNum_int")
    );
    assert_eq!(
        s("rts.gc.bytes_copied").as_deref(),
        Some("rts_gc_bytes_copied")
    );
    assert_eq!(s("a-b c").as_deref(), Some("a_b_c"));
    assert_eq!(s("wei\"rd\\na\u{e9}me{x}").as_deref(), Some("weirdnamex"));
    assert_eq!(s("1st").as_deref(), Some("_1st"));
    assert_eq!(s("\u{1F600}"), None);
    let strip = |n: &str| sanitise(n, true).map(String::from);
    assert_eq!(strip("Mem.resident_int").as_deref(), Some("Mem_resident"));
    assert_eq!(strip("x_counter").as_deref(), Some("x"));
    assert_eq!(strip("x_real").as_deref(), Some("x"));
    assert_eq!(strip("x_integer").as_deref(), Some("x_integer"));
}

#[test]
fn negotiates_like_cardano_tracer() {
    assert_eq!(Format::from_accept(None), Format::OpenMetrics);
    assert_eq!(
        Format::from_accept(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )),
        Format::OpenMetrics
    );
    assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
    assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
    assert_eq!(
        Format::OpenMetrics.content_type(),
        "application/openmetrics-text;version=1.0.0;charset=utf-8"
    );
    assert_eq!(
        Format::Text.content_type(),
        "text/plain;version=0.0.4;charset=utf-8"
    );
}

fn sample_set(naming: &Naming) -> Vec<(Arc<MetricName>, MetricValue)> {
    metrics(
        naming,
        &[
            ("Mem.resident_int", MetricValue::Gauge(103_792_640.0)),
            ("rts.gc.gc_cpu_ms", MetricValue::Counter(50)),
            ("load_real", MetricValue::Label("0.75".into())),
            (
                "build",
                MetricValue::Label("{version=\"1.2\",commit=\"a\\\"b\"} 1".into()),
            ),
            ("era", MetricValue::Label("Conway".into())),
        ],
    )
}

#[test]
fn renders_openmetrics_names_exactly() {
    let mut help = BTreeMap::new();
    help.insert(
        "Mem.resident".to_string(),
        "Kernel-reported RSS (resident set size)".to_string(),
    );
    let naming = Naming::new(false, help).with_openmetrics_names(true);
    let out = render(Format::OpenMetrics, &sample_set(&naming));
    assert_eq!(
        out,
        "# HELP Mem_resident_int Kernel-reported RSS (resident set size)\n\
         # TYPE Mem_resident_int gauge\n\
         Mem_resident_int 103792640\n\
         # HELP build build\n\
         # TYPE build info\n\
         build_info{version=\"1.2\",commit=\"a\\\"b\"} 1\n\
         # HELP era era\n\
         # TYPE era info\n\
         era_info{value=\"Conway\"} 1\n\
         # HELP load_real load_real\n\
         # TYPE load_real gauge\n\
         load_real 0.75\n\
         # HELP rts_gc_gc_cpu_ms rts.gc.gc_cpu_ms\n\
         # TYPE rts_gc_gc_cpu_ms counter\n\
         rts_gc_gc_cpu_ms_total 50\n\
         # EOF\n"
    );
}

#[test]
fn renders_text_format_with_openmetrics_names_exactly() {
    let naming = Naming::new(true, BTreeMap::new()).with_openmetrics_names(true);
    let out = render(Format::Text, &sample_set(&naming));
    assert_eq!(
        out,
        "# HELP Mem_resident Mem.resident_int\n\
         # TYPE Mem_resident gauge\n\
         Mem_resident 103792640\n\
         # HELP build_info build\n\
         # TYPE build_info gauge\n\
         build_info{version=\"1.2\",commit=\"a\\\"b\"} 1\n\
         # HELP era_info era\n\
         # TYPE era_info gauge\n\
         era_info{value=\"Conway\"} 1\n\
         # HELP load load_real\n\
         # TYPE load gauge\n\
         load 0.75\n\
         # HELP rts_gc_gc_cpu_ms_total rts.gc.gc_cpu_ms\n\
         # TYPE rts_gc_gc_cpu_ms_total counter\n\
         rts_gc_gc_cpu_ms_total 50\n"
    );
}

#[test]
fn help_is_the_first_substring_match_in_key_order() {
    let mut help = BTreeMap::new();
    help.insert("resident".to_string(), "second".to_string());
    help.insert("Mem".to_string(), "first".to_string());
    let naming = Naming::new(false, help).with_openmetrics_names(true);
    assert_eq!(&*naming.name("Mem.resident_int").help, "first");
    assert_eq!(&*naming.name("x.resident").help, "second");
    assert_eq!(&*naming.name("other").help, "other");
}

#[test]
fn escapes_adversarial_values_and_help() {
    let naming = Naming::default().with_openmetrics_names(true);
    let m = metrics(
        &naming,
        &[
            (
                "evil\nname\"x\\",
                MetricValue::Label("a\"b\\c\nd \u{e9}\u{1F600}".into()),
            ),
            ("inf", MetricValue::Gauge(f64::INFINITY)),
            ("minf", MetricValue::Gauge(f64::NEG_INFINITY)),
            ("nan", MetricValue::Gauge(f64::NAN)),
        ],
    );
    let out = render(Format::OpenMetrics, &m);
    assert!(
        out.contains("# HELP evilnamex evil\\nname\\\"x\\\\\n"),
        "{out}"
    );
    assert!(
        out.contains("evilnamex_info{value=\"a\\\"b\\\\c\\nd \u{e9}\u{1F600}\"} 1\n"),
        "{out}"
    );
    assert!(out.contains("\ninf +Inf\n"));
    assert!(out.contains("\nminf -Inf\n"));
    assert!(out.contains("\nnan NaN\n"));
    let text = render(Format::Text, &m);
    // Text 0.0.4 HELP escapes only backslash and newline.
    assert!(
        text.contains("# HELP evilnamex_info evil\\nname\"x\\\\\n"),
        "{text}"
    );
}

#[test]
fn label_sets_parse_strictly() {
    assert_eq!(
        parse_label_set("{a=\"1\", b=\"x\\\\y\\\"z\\n\"} 1"),
        Some(vec![("a", "1".to_string()), ("b", "x\\y\"z\n".to_string())])
    );
    assert_eq!(parse_label_set("{}"), Some(vec![]));
    assert_eq!(parse_label_set("{a=\"1\",a=\"2\"}"), None);
    assert_eq!(parse_label_set("{__a=\"1\"}"), None);
    assert_eq!(parse_label_set("{1a=\"1\"}"), None);
    assert_eq!(parse_label_set("{a=\"1\"} junk"), None);
    assert_eq!(parse_label_set("{a=\"unterminated}"), None);
    assert_eq!(parse_label_set("{a=1}"), None);
    // Not a label set: becomes an info metric with the text as its value.
    assert_eq!(
        shape(&MetricValue::Label("{broken".into())),
        Shape::Info(vec![("value", "{broken".to_string())])
    );
    assert_eq!(
        shape(&MetricValue::Label(" -4.2e1 ".into())),
        Shape::GaugeText("-4.2e1")
    );
    assert_eq!(
        shape(&MetricValue::Label("inf".into())),
        Shape::Gauge(f64::INFINITY)
    );
    assert_eq!(shape(&MetricValue::Label(".5".into())), Shape::Gauge(0.5));
}

#[test]
fn merges_nodes_into_sorted_families_with_node_labels() {
    let naming = Naming::default().with_openmetrics_names(true);
    let a = metrics(
        &naming,
        &[
            ("z.count", MetricValue::Counter(1)),
            ("a", MetricValue::Gauge(1.5)),
            ("tag", MetricValue::Label("{node_name=\"inner\"} 1".into())),
        ],
    );
    let b = metrics(&naming, &[("z.count", MetricValue::Counter(2))]);
    let mut r = Renderer::new(Format::Text);
    r.add_node(Some("n\"1"), a.iter().map(|(n, v)| (n, v)));
    r.add_node(Some("n2"), b.iter().map(|(n, v)| (n, v)));
    let mut out = String::new();
    let stats = r.finish(&mut out);
    assert_eq!(stats.families, 3);
    assert_eq!(
        out,
        "# HELP a a\n# TYPE a gauge\na{node_name=\"n\\\"1\"} 1.5\n\
         # HELP tag_info tag\n# TYPE tag_info gauge\n\
         tag_info{node_name=\"n\\\"1\",exported_node_name=\"inner\"} 1\n\
         # HELP z_count_total z.count\n# TYPE z_count_total counter\n\
         z_count_total{node_name=\"n\\\"1\"} 1\nz_count_total{node_name=\"n2\"} 2\n"
    );
}

#[test]
fn colliding_names_keep_the_first_and_count_the_rest() {
    let naming = Naming::default().with_openmetrics_names(true);
    let m = metrics(
        &naming,
        &[
            ("a.b", MetricValue::Gauge(1.0)),
            ("a-b", MetricValue::Gauge(2.0)),
            ("x", MetricValue::Counter(1)),
            ("x_total", MetricValue::Gauge(3.0)),
            ("reserved", MetricValue::Gauge(4.0)),
            ("\u{1F600}", MetricValue::Gauge(5.0)),
        ],
    );
    let mut r = Renderer::new(Format::OpenMetrics);
    r.reserve("reserved");
    r.add_node(None, m.iter().map(|(n, v)| (n, v)));
    let mut out = String::new();
    let stats = r.finish(&mut out);
    assert_eq!(stats.collisions, 4, "{out}");
    assert_eq!(
        out,
        "# HELP a_b a-b\n# TYPE a_b gauge\na_b 2\n\
         # HELP x x\n# TYPE x counter\nx_total 1\n"
    );
}

#[test]
fn uncached_names_of_the_same_metric_still_form_one_family() {
    let n1 = Arc::new(Naming::default().with_openmetrics_names(true).compute("m"));
    let n2 = Arc::new(Naming::default().with_openmetrics_names(true).compute("m"));
    let v = MetricValue::Gauge(1.0);
    let mut r = Renderer::new(Format::Text);
    r.add_node(Some("a"), [(&n1, &v)]);
    r.add_node(Some("b"), [(&n2, &v)]);
    let mut out = String::new();
    r.finish(&mut out);
    assert_eq!(
        out,
        "# HELP m m\n# TYPE m gauge\nm{node_name=\"a\"} 1\nm{node_name=\"b\"} 1\n"
    );
}

/// A minimal parser of what we write: every line is a comment we wrote or a sample of the
/// family announced just before, with balanced, correctly escaped label values.
fn check_exposition(text: &str, format: Format) -> Result<(), String> {
    let mut family: Option<(String, String)> = None;
    let mut seen = HashSet::new();
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !seen.insert(name.to_string()) {
                return Err(format!("family {name} twice"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            family = Some((
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            ));
            continue;
        }
        if *line == "# EOF" {
            if format != Format::OpenMetrics || i + 1 != lines.len() {
                return Err("misplaced # EOF".into());
            }
            continue;
        }
        let Some((fam, _)) = &family else {
            return Err(format!("sample before TYPE: {line}"));
        };
        let name_end = line.find(['{', ' ']).ok_or("no value")?;
        let name = &line[..name_end];
        if !name.starts_with(fam.as_str()) {
            return Err(format!("sample {name} outside family {fam}"));
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad name {name}"));
        }
        let mut rest = &line[name_end..];
        if let Some(labels) = rest.strip_prefix('{') {
            let mut chars = labels.char_indices();
            let end = loop {
                let (_, c) = chars.next().ok_or("unterminated labels")?;
                match c {
                    '}' => break chars.next().map_or(labels.len(), |(i, _)| i),
                    '"' => loop {
                        match chars.next().ok_or("unterminated value")?.1 {
                            '\\' => match chars.next().ok_or("dangling escape")?.1 {
                                '\\' | '"' | 'n' => {}
                                c => return Err(format!("bad escape \\{c}")),
                            },
                            '"' => break,
                            '\n' => return Err("raw newline".into()),
                            _ => {}
                        }
                    },
                    _ => {}
                }
            };
            rest = &labels[end..];
        }
        let value = rest.strip_prefix(' ').ok_or("no space before value")?;
        if value.parse::<f64>().is_err() && !["NaN", "+Inf", "-Inf"].contains(&value) {
            return Err(format!("bad value {value:?}"));
        }
    }
    if format == Format::OpenMetrics && lines.last() != Some(&"# EOF") {
        return Err("no # EOF".into());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_names_and_values_render_valid_expositions(
        entries in proptest::collection::vec(
            (any::<String>(), prop_oneof![
                any::<i64>().prop_map(MetricValue::Counter),
                any::<f64>().prop_map(MetricValue::Gauge),
                any::<String>().prop_map(MetricValue::Label),
                ("[a-z_]{1,5}", any::<String>()).prop_map(|(k, v)| MetricValue::Label(
                    format!("{{{k}=\"{}\"}} 1", v.replace('\\', "\\\\").replace('"', "\\\"")))),
            ]),
            0..20,
        ),
        node in any::<String>(),
        openmetrics_names in any::<bool>(),
    ) {
        let naming = Naming::default().with_openmetrics_names(openmetrics_names);
        let m: Vec<(Arc<MetricName>, MetricValue)> =
            entries.iter().map(|(k, v)| (naming.name(k), v.clone())).collect();
        for format in [Format::OpenMetrics, Format::Text] {
            let out = render(format, &m);
            prop_assert!(check_exposition(&out, format).is_ok(), "{:?}\n{}", check_exposition(&out, format), out);
            let mut r = Renderer::new(format);
            r.add_node(Some(&node), m.iter().map(|(n, v)| (n, v)));
            let mut merged = String::new();
            r.finish(&mut merged);
            if format == Format::OpenMetrics {
                merged.push_str("# EOF\n");
            }
            prop_assert!(check_exposition(&merged, format).is_ok(), "{:?}\n{}", check_exposition(&merged, format), merged);
        }
    }

    #[test]
    fn label_values_round_trip_through_escaping(value in any::<String>()) {
        let mut escaped = String::new();
        escape_label_value(&mut escaped, &value);
        let text = format!("{{k=\"{escaped}\"}} 1");
        let parsed = parse_label_set(&text);
        prop_assert_eq!(parsed, Some(vec![("k", value.clone())]));
    }
}

#[test]
fn samples_keep_node_order_across_staging_flushes() {
    let naming = Naming::default().with_openmetrics_names(true);
    let nodes = STAGED_NODES * 2 + 3;
    let per_node: Vec<Vec<(Arc<MetricName>, MetricValue)>> = (0..nodes)
        .map(|n| {
            metrics(
                &naming,
                &[
                    ("b", MetricValue::Counter(n as i64)),
                    ("a", MetricValue::Gauge(n as f64)),
                ],
            )
        })
        .collect();
    let mut r = Renderer::with_nodes(Format::Text, nodes);
    for (n, m) in per_node.iter().enumerate() {
        r.add_node(Some(&format!("n{n:02}")), m.iter().map(|(k, v)| (k, v)));
    }
    let mut out = String::new();
    r.finish(&mut out);
    let mut expected = String::from("# HELP a a\n# TYPE a gauge\n");
    for n in 0..nodes {
        expected.push_str(&format!("a{{node_name=\"n{n:02}\"}} {n}\n"));
    }
    expected.push_str("# HELP b_total b\n# TYPE b_total counter\n");
    for n in 0..nodes {
        expected.push_str(&format!("b_total{{node_name=\"n{n:02}\"}} {n}\n"));
    }
    assert_eq!(out, expected);
}

/// cardano-tracer's rendering (trace-dispatcher `Cardano.Logging.Prometheus.Exposition`
/// `renderExpositionFromSampleWith`, see /work/scratch/upstream/NOTES.md §a): the sample name is
/// the EKG name with `.`, `-`, ` ` mapped to `_`, never a `_total` or `_info` added; a label
/// `{k="v"} 1` is written as `<name>{k="v"} 1`. tracerd keeps every sample name and label set
/// and only changes the OpenMetrics TYPE where `counter`/`info` would need other sample names.
#[test]
fn renders_cardano_tracer_names_by_default() {
    let mut help = BTreeMap::new();
    help.insert(
        "Mem.resident".to_string(),
        "Kernel-reported RSS (resident set size)".to_string(),
    );
    let naming = Naming::new(false, help);
    let set = sample_set(&naming);
    let om = render(Format::OpenMetrics, &set);
    assert_eq!(
        om,
        "# HELP Mem_resident_int Kernel-reported RSS (resident set size)\n\
         # TYPE Mem_resident_int gauge\n\
         Mem_resident_int 103792640\n\
         # HELP build build\n\
         # TYPE build gauge\n\
         build{version=\"1.2\",commit=\"a\\\"b\"} 1\n\
         # HELP era era\n\
         # TYPE era gauge\n\
         era{value=\"Conway\"} 1\n\
         # HELP load_real load_real\n\
         # TYPE load_real gauge\n\
         load_real 0.75\n\
         # HELP rts_gc_gc_cpu_ms rts.gc.gc_cpu_ms\n\
         # TYPE rts_gc_gc_cpu_ms unknown\n\
         rts_gc_gc_cpu_ms 50\n\
         # EOF\n"
    );
    let text = render(Format::Text, &set);
    assert!(
        text.contains("# TYPE rts_gc_gc_cpu_ms counter\nrts_gc_gc_cpu_ms 50\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE build gauge\nbuild{version=\"1.2\",commit=\"a\\\"b\"} 1\n"),
        "{text}"
    );
    // A counter already named `_total` stays a real OpenMetrics counter, same sample name.
    let total = metrics(&naming, &[("served_total", MetricValue::Counter(3))]);
    assert_eq!(
        render(Format::OpenMetrics, &total),
        "# HELP served served_total\n# TYPE served counter\nserved_total 3\n# EOF\n"
    );
}

/// Issue 12 point 13: what a strict OpenMetrics parser rejects is dropped per metric and
/// counted, never the whole exposition.
#[test]
fn strict_openmetrics_drops_only_the_bad_metric() {
    for openmetrics_names in [false, true] {
        let naming = Naming::default().with_openmetrics_names(openmetrics_names);
        let m = metrics(
            &naming,
            &[
                ("neg_total", MetricValue::Counter(-5)),
                ("c_total", MetricValue::Counter(1)),
                ("c_created", MetricValue::Gauge(2.0)),
                ("good", MetricValue::Gauge(3.0)),
                (
                    "set",
                    MetricValue::Label("{node_name=\"a\",exported_node_name=\"b\"} 1".into()),
                ),
            ],
        );
        let mut r = Renderer::new(Format::OpenMetrics);
        r.add_node(Some("n"), m.iter().map(|(n, v)| (n, v)));
        let mut out = String::new();
        let stats = r.finish(&mut out);
        out.push_str("# EOF\n");
        assert!(!out.contains("neg_total{"), "{out}");
        assert!(!out.contains("c_created{"), "{out}");
        assert!(!out.contains("exported_node_name"), "{out}");
        assert!(out.contains("c_total{node_name=\"n\"} 1\n"), "{out}");
        assert!(out.contains("good{node_name=\"n\"} 3\n"), "{out}");
        assert_eq!((stats.invalid, stats.collisions), (2, 1), "{out}");
        check_exposition(&out, Format::OpenMetrics).unwrap();
    }
}
