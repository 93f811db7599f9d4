//! The SAM template and the code agree: functions, environment variables, prefixes, routes,
//! metric names. A rename on one side fails here.

use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};

fn root(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn template() -> Value {
    serde_yaml::from_str(&root("infra/template.yaml")).expect("infra/template.yaml is YAML")
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => &t.value,
        other => other,
    }
}

fn functions(t: &Value) -> BTreeMap<String, (String, Value)> {
    let mut out = BTreeMap::new();
    for (name, res) in t["Resources"].as_mapping().unwrap() {
        if res["Type"] == "AWS::Serverless::Function" {
            let binary = res["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .expect("BuildProperties.Binary")
                .to_owned();
            assert_eq!(res["Metadata"]["BuildMethod"], "rust-cargolambda");
            out.insert(binary, (name.as_str().unwrap().to_owned(), res.clone()));
        }
    }
    out
}

/// Environment variables a function gets: Globals plus its own.
fn env_vars(t: &Value, function: &Value) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    for vs in [
        &t["Globals"]["Function"]["Environment"]["Variables"],
        &function["Properties"]["Environment"]["Variables"],
    ] {
        if let Some(m) = vs.as_mapping() {
            vars.extend(m.keys().map(|k| k.as_str().unwrap().to_owned()));
        }
    }
    vars
}

/// Variable names read in the body of `impl <ty>` in src/config.rs, and those of them read
/// with `required(...)`.
fn config_vars(ty: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let src = root("src/config.rs");
    let start = src
        .find(&format!("impl {ty} {{"))
        .unwrap_or_else(|| panic!("impl {ty}"));
    let body = &src[start..];
    let end = body[1..]
        .find("\nimpl ")
        .map(|i| i + 1)
        .unwrap_or(body.len());
    let body = &body[..end];
    let (mut all, mut required) = (BTreeSet::new(), BTreeSet::new());
    for (i, _) in body.match_indices('"') {
        let rest = &body[i + 1..];
        let Some(close) = rest.find('"') else {
            continue;
        };
        let word = &rest[..close];
        if word.len() > 3
            && word
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            all.insert(word.to_owned());
            if body[..i].ends_with("required(env, ") {
                required.insert(word.to_owned());
            }
        }
    }
    (all, required)
}

#[test]
fn every_lambda_binary_is_a_function_in_the_template_and_nothing_else() {
    let t = template();
    let in_template: BTreeSet<String> = functions(&t).into_keys().collect();
    let bins: BTreeSet<String> =
        std::fs::read_dir(format!("{}/src/bin", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .file_name()
                    .into_string()
                    .unwrap()
                    .trim_end_matches(".rs")
                    .to_owned()
            })
            .filter(|b| b != "tv1")
            .collect();
    assert_eq!(in_template, bins);
    for (_, f) in functions(&t).values() {
        assert_eq!(
            f["Properties"]["CodeUri"], "../",
            "CodeUri is the folder with Cargo.toml"
        );
    }
    assert_eq!(t["Globals"]["Function"]["Runtime"], "provided.al2023");
    assert_eq!(t["Globals"]["Function"]["Handler"], "bootstrap");
}

#[test]
fn environment_variables_match_what_the_code_reads() {
    let t = template();
    let fns = functions(&t);
    for (binary, ty) in [
        ("audit-puller", "PullerConfig"),
        ("ad-ingest", "IngestConfig"),
        ("ad-compact", "IngestConfig"),
    ] {
        let (mut reads, required) = config_vars(ty);
        assert!(required.contains("BUCKET"), "parsed {ty}: {required:?}");
        // Both read the OCSF output's settings through OcsfConfig.
        reads.extend(config_vars("OcsfConfig").0);
        // The puller reads each stream's prefix, filter and OCSF period variables as Stream
        // names them.
        if ty == "PullerConfig" {
            for s in tv1_connector::audit::stream::Stream::ALL {
                reads.insert(s.prefix_var().0.to_owned());
                reads.extend(s.filter_var().map(str::to_owned));
                reads.insert(s.ocsf_period_var().0.to_owned());
            }
        }
        let set = env_vars(&t, &fns[binary].1);
        let unknown: Vec<_> = set.difference(&reads).collect();
        assert!(
            unknown.is_empty(),
            "{binary}: the template sets {unknown:?}, which {ty} never reads"
        );
        let missing: Vec<_> = required.difference(&set).collect();
        assert!(
            missing.is_empty(),
            "{binary}: the template does not set required {missing:?}"
        );
    }
}

#[test]
fn ocsf_period_parameters_default_to_the_codes_and_allow_only_what_it_takes() {
    let t = template();
    let fns = functions(&t);
    let vars = &fns["audit-puller"].1["Properties"]["Environment"]["Variables"];
    for s in tv1_connector::audit::stream::Stream::ALL {
        let (var, default) = s.ocsf_period_var();
        let param = untag(&vars[var])
            .as_str()
            .unwrap_or_else(|| panic!("{var} is set"));
        let p = &t["Parameters"][param];
        assert_eq!(p["Default"].as_str(), Some(default), "{param}");
        for allowed in p["AllowedValues"].as_sequence().unwrap() {
            let env = [
                ("TV1_TOKEN_PARAM", "/t"),
                ("BUCKET", "b"),
                (var, allowed.as_str().unwrap()),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let c = tv1_connector::config::PullerConfig::for_stream(&env, s).unwrap();
            assert_eq!(
                format!("{}h", c.ocsf_period.as_secs() / 3600),
                allowed.as_str().unwrap()
            );
        }
    }
}

#[test]
fn prefix_defaults_match_the_code() {
    let t = template();
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let puller = tv1_connector::config::PullerConfig::from_map(&env(&[
        ("TV1_TOKEN_PARAM", "/t"),
        ("BUCKET", "b"),
    ]))
    .unwrap();
    let ingest = tv1_connector::config::IngestConfig::from_map(&env(&[
        ("API_KEY_PARAM", "/k"),
        ("BUCKET", "b"),
    ]))
    .unwrap();
    assert_eq!(
        t["Parameters"]["AuditPrefix"]["Default"].as_str(),
        Some(puller.prefix.as_str())
    );
    assert_eq!(
        t["Parameters"]["AdPrefix"]["Default"].as_str(),
        Some(ingest.prefix.as_str())
    );
    let fns = functions(&t);
    let vars = |b: &str| fns[b].1["Properties"]["Environment"]["Variables"].clone();
    assert_eq!(
        untag(&vars("audit-puller")["AUDIT_PREFIX"]).as_str(),
        Some("AuditPrefix")
    );
    assert_eq!(
        untag(&vars("ad-ingest")["AD_PREFIX"]).as_str(),
        Some("AdPrefix")
    );
    assert_eq!(
        untag(&vars("audit-puller")["TV1_TOKEN_PARAM"]).as_str(),
        Some("TokenParameterName")
    );
    assert_eq!(
        untag(&vars("ad-ingest")["API_KEY_PARAM"]).as_str(),
        Some("ApiKeyParameterName")
    );
    // The SSM parameter each function may read is the one it is told to use.
    let text = root("infra/template.yaml");
    assert!(text.contains(":parameter${TokenParameterName}"));
    assert!(text.contains(":parameter${ApiKeyParameterName}"));
    assert!(text.contains("${Bucket}/${AuditPrefix}*") && text.contains("${Bucket}/${AdPrefix}*"));
}

#[test]
fn http_routes_match_the_router() {
    let t = template();
    let fns = functions(&t);
    let mut routes: Vec<(String, String)> = fns["ad-ingest"].1["Properties"]["Events"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|e| e["Type"] == "HttpApi")
        .map(|e| {
            (
                e["Properties"]["Method"].as_str().unwrap().to_owned(),
                e["Properties"]["Path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    routes.sort();
    let mut code: Vec<(String, String)> = tv1_connector::ad::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    code.sort();
    assert_eq!(routes, code);
    // The binary-safe front door: every route, every body base64-encoded ("*~1*" is SAM's
    // escaping of "*/*").
    let rest: Vec<&serde_yaml::Value> = fns["ad-ingest"].1["Properties"]["Events"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|e| e["Type"] == "Api")
        .collect();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["Properties"]["Path"], "/{proxy+}");
    assert_eq!(rest[0]["Properties"]["Method"], "ANY");
    let api = untag(&rest[0]["Properties"]["RestApiId"]).as_str().unwrap();
    let api = &t["Resources"][api];
    assert_eq!(api["Type"], "AWS::Serverless::Api");
    assert_eq!(api["Properties"]["BinaryMediaTypes"][0], "*~1*");
}

#[test]
fn the_lag_alarm_watches_the_metric_the_puller_emits() {
    let t = template();
    let alarm = &t["Resources"]["CollectionLagAlarm"]["Properties"];
    assert_eq!(
        alarm["Namespace"].as_str(),
        Some(tv1_connector::audit::METRIC_NAMESPACE)
    );
    assert_eq!(
        alarm["MetricName"].as_str(),
        Some(tv1_connector::audit::METRIC_LAG)
    );
    assert_eq!(alarm["Dimensions"][0]["Name"], "FunctionName");
    assert_eq!(alarm["Dimensions"][1]["Name"], "Stream");
    assert_eq!(alarm["Dimensions"][1]["Value"], "audit");
    let line = tv1_connector::audit::emf_line(&pull_reply(None), "f", 0).unwrap();
    assert!(line.contains("\"Dimensions\":[[\"FunctionName\",\"Stream\"]]"));
    assert!(line.contains("\"Stream\":\"audit\""));
    for (alarm, stream) in [
        ("AlertsCollectionLagAlarm", "alerts"),
        ("OatCollectionLagAlarm", "oat"),
    ] {
        let alarm = &t["Resources"][alarm]["Properties"];
        assert_eq!(alarm["Dimensions"][1]["Value"], stream);
    }
}

/// A pull's reply that lagged one second and found `late` late entries.
fn pull_reply(late: Option<u64>) -> tv1_connector::audit::Reply {
    let mut s =
        tv1_connector::audit::RunSummary::new("r".into(), chrono::Utc::now(), None, 0, false);
    s.lag_seconds = Some(1);
    s.reconcile = late.map(|n| tv1_connector::audit::ReconcileSummary {
        late_entries: n,
        ..Default::default()
    });
    tv1_connector::audit::Reply::Pull(s)
}

#[test]
fn the_late_entries_alarm_watches_the_metric_the_puller_emits() {
    let t = template();
    let alarm = &t["Resources"]["LateEntriesAlarm"]["Properties"];
    assert_eq!(
        alarm["Namespace"].as_str(),
        Some(tv1_connector::audit::METRIC_NAMESPACE)
    );
    assert_eq!(
        alarm["MetricName"].as_str(),
        Some(tv1_connector::audit::METRIC_LATE)
    );
    assert_eq!(alarm["Dimensions"][0]["Name"], "FunctionName");
    assert_eq!(alarm["Dimensions"][1]["Value"], "audit");
    assert_eq!(alarm["Statistic"], "Sum");
    let line = tv1_connector::audit::emf_line(&pull_reply(Some(3)), "f", 0).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v[tv1_connector::audit::METRIC_LATE], 3);
    // The horizon the template passes is one the puller accepts.
    let horizon = t["Parameters"]["ReconcileHorizon"]["Default"]
        .as_str()
        .unwrap();
    let fns = functions(&t);
    let vars = &fns["audit-puller"].1["Properties"]["Environment"]["Variables"];
    assert!(vars.get("TV1_RECONCILE_HORIZON").is_some());
    let cfg = tv1_connector::config::PullerConfig::from_map(
        &[
            ("TV1_TOKEN_PARAM", "/t"),
            ("BUCKET", "b"),
            ("TV1_RECONCILE_HORIZON", horizon),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
    .unwrap();
    assert_eq!(cfg.reconcile_horizon.as_secs(), 86_400);
}

#[test]
fn puller_timeout_leaves_room_for_the_deadline_margin() {
    let t = template();
    let fns = functions(&t);
    let puller = &fns["audit-puller"].1["Properties"];
    // One run per stream at a time: one for audit, one more for each stream switched on.
    let concurrency = untag(&puller["ReservedConcurrentExecutions"]);
    assert_eq!(concurrency[0], "AlertsOn");
    let oat = |v: &Value| {
        let v = untag(v);
        assert_eq!(v[0], "OatOn");
        (v[1].as_u64().unwrap(), v[2].as_u64().unwrap())
    };
    assert_eq!(oat(&concurrency[1]), (3, 2), "alerts on");
    assert_eq!(oat(&concurrency[2]), (2, 1), "alerts off");
    let margin = puller["Environment"]["Variables"]["TV1_DEADLINE_MARGIN"]
        .as_str()
        .unwrap();
    let margin = tv1_connector::timefmt::parse_duration(margin)
        .unwrap()
        .as_secs();
    let min_timeout = t["Parameters"]["PullerTimeoutSeconds"]["MinValue"]
        .as_u64()
        .unwrap();
    assert!(
        min_timeout > 2 * margin,
        "timeout {min_timeout}s vs margin {margin}s"
    );
}

/// The statements of a function's inline policy, with `!If [cond, statement, NoValue]` taken as
/// the statement.
fn statements(function: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for policy in function["Properties"]["Policies"].as_sequence().unwrap() {
        for s in policy["Statement"].as_sequence().unwrap() {
            match s {
                Value::Tagged(t) if t.tag == "!If" => out.push(t.value[1].clone()),
                other => out.push(other.clone()),
            }
        }
    }
    out
}

fn actions(statement: &Value) -> Vec<String> {
    match &statement["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Sequence(s) => s.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
        _ => vec![],
    }
}

/// The ARN pattern of a `Resource: !Sub [pattern, vars]` or `!Sub pattern`.
fn resource(statement: &Value) -> String {
    pattern(&statement["Resource"])
}

fn pattern(r: &Value) -> String {
    match untag(r) {
        Value::Sequence(s) => s[0].as_str().unwrap_or_default().to_owned(),
        other => other.as_str().unwrap_or_default().to_owned(),
    }
}

/// Every ARN pattern of a statement's `Resource`: one, or a list of them (an `!If [cond,
/// resource, NoValue]` taken as the resource).
fn resources(statement: &Value) -> Vec<String> {
    match &statement["Resource"] {
        Value::Sequence(list) => list
            .iter()
            .map(|r| match r {
                Value::Tagged(t) if t.tag == "!If" => pattern(&t.value[1]),
                other => pattern(other),
            })
            .collect(),
        _ => vec![resource(statement)],
    }
}

#[test]
fn a_function_that_reads_keys_that_may_be_absent_can_tell_absent_from_denied() {
    // S3 answers 403, not 404, for a missing key unless the caller has s3:ListBucket on the
    // bucket, and a policy condition on s3:prefix does not count for that check. Both functions
    // read keys that may not exist yet (checkpoint, status, batch markers, agent records).
    let t = template();
    for (binary, prefixes) in [
        (
            "audit-puller",
            &["AuditPrefix", "AlertsPrefix", "OatPrefix"][..],
        ),
        ("ad-ingest", &["AdPrefix"][..]),
    ] {
        let stmts = statements(&functions(&t)[binary].1);
        let reads = stmts
            .iter()
            .any(|s| actions(s).iter().any(|a| a == "s3:GetObject"));
        assert!(reads, "{binary} reads state documents");
        let list = stmts.iter().find(|s| {
            actions(s).iter().any(|a| a == "s3:ListBucket")
                && s["Effect"] == "Allow"
                && resource(s).ends_with(":s3:::${Bucket}")
        });
        let list = list.unwrap_or_else(|| {
            panic!("{binary} reads keys that may be absent without s3:ListBucket on the bucket: a missing key would be a 403")
        });
        assert!(
            list.get("Condition").is_none(),
            "{binary}: s3:ListBucket with a Condition does not make a missing key a 404"
        );
        // Reads and writes stay on the function's own prefix; the OCSF sources (checked in
        // `ocsf_glue_tables_match_the_parquet_schema_and_layout`) are only written.
        for s in stmts.iter().filter(|s| {
            actions(s)
                .iter()
                .any(|a| a.starts_with("s3:") && a != "s3:ListBucket")
        }) {
            if s["Sid"] == "WriteOcsfSources" {
                // Only the puller's backfill replaces and deletes Parquet objects.
                let expected: &[&str] = match binary {
                    "audit-puller" => &["s3:PutObject", "s3:DeleteObject"],
                    _ => &["s3:PutObject"],
                };
                assert_eq!(actions(s), expected, "{binary}");
                continue;
            }
            for r in resources(s) {
                assert!(
                    prefixes
                        .iter()
                        .any(|p| r.ends_with(&format!(":s3:::${{Bucket}}/${{{p}}}*"))),
                    "{binary}: object access outside its prefixes: {r}"
                );
            }
        }
    }
}

#[test]
fn expiry_never_reaches_state_documents() {
    let t = template();
    let rules = t["Resources"]["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        .as_sequence()
        .expect("lifecycle rules");
    let expand = |v: &Value| {
        untag(v)
            .as_str()
            .unwrap()
            .replace("${AuditPrefix}", "vision-one/audit/")
            .replace("${AdPrefix}", "active-directory/")
    };
    let prefixes: Vec<String> = rules
        .iter()
        .filter(|r| r.get("ExpirationInDays").is_some())
        .map(|r| expand(&r["Prefix"]))
        .collect();
    let expires = |key: &str| prefixes.iter().any(|p| key.starts_with(p.as_str()));
    for state in [
        "vision-one/audit/_state/checkpoint.json",
        "vision-one/audit/_state/status.json",
        "active-directory/_state/agents/dc01.json",
        "active-directory/_state/compaction.json",
    ] {
        assert!(!expires(state), "{state} would expire: {prefixes:?}");
    }
    for data in [
        "vision-one/audit/dt=2026-11-21/hour=10/20261121T100000Z_20261121T103000Z.jsonl.gz",
        "vision-one/audit/dt=2026-11-20/hour=03/backfill_20261120T030000Z_20261120T040000Z-000.jsonl.gz",
        "active-directory/category=logon/dt=2026-11-21/x.jsonl.gz",
        "active-directory/_state/batches/dc01/b1.json",
        "active-directory/_state/windows/20261121T100000Z.json",
        "active-directory/_landing/20261121T100000Z/dc01~b1.jsonl.gz",
    ] {
        assert!(expires(data), "{data} never expires: {prefixes:?}");
    }
}

/// The Glue tables over the OCSF output: one per source, with the columns the Parquet writer
/// writes (the Arrow schema as Hive types) and the layout the writer uses.
#[test]
fn ocsf_glue_tables_match_the_parquet_schema_and_layout() {
    use tv1_connector::lake::ocsf::{Dataset, parquet::hive_columns};
    let t = template();
    let resources = t["Resources"].as_mapping().unwrap();
    let tables: BTreeMap<String, &Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::Glue::Table" && r["Condition"] == "OcsfGlueTables")
        .map(|r| {
            let name = r["Properties"]["TableInput"]["Name"].as_str().unwrap();
            (name.to_owned(), &r["Properties"]["TableInput"])
        })
        .collect();
    let mut expected = BTreeSet::new();
    for d in Dataset::ALL {
        for c in d.classes() {
            let source = d.source(*c);
            let name = source.replace('-', "_");
            let table = tables
                .get(&name)
                .unwrap_or_else(|| panic!("no Glue table {name} for source {source}"));
            let columns: Vec<(String, String)> = table["StorageDescriptor"]["Columns"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["Name"].as_str().unwrap().to_owned(),
                        c["Type"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(columns, hive_columns(*c), "{name}");
            let location =
                serde_yaml::to_string(&table["Parameters"]["storage.location.template"]).unwrap();
            assert!(
                location.contains(&format!(
                    "${{OcsfPrefix}}{source}/region=${{!region}}/accountId=${{!accountid}}/eventDay=${{!eventday}}/"
                )),
                "{name}: {location}"
            );
            assert_eq!(
                table["Parameters"]["projection.eventday.format"],
                "yyyyMMdd"
            );
            expected.insert(name);
        }
    }
    assert_eq!(tables.keys().cloned().collect::<BTreeSet<_>>(), expected);
    // Each function may write its own datasets' sources, and only them.
    for (binary, datasets) in [
        (
            "audit-puller",
            &[Dataset::Audit, Dataset::Alerts, Dataset::Oat][..],
        ),
        ("ad-compact", &[Dataset::Ad][..]),
    ] {
        let fns = functions(&t);
        let writes: Vec<String> = statements(&fns[binary].1)
            .iter()
            .filter(|s| s["Sid"] == "WriteOcsfSources")
            .flat_map(self::resources)
            .collect();
        // A dataset of several sources is written under `tv1-<dataset>-*`, one of one source
        // under `tv1-<source>/*`.
        let expected: Vec<String> = datasets
            .iter()
            .map(|d| match d.classes() {
                [one] => format!("${{OcsfPrefix}}{}/*", d.source(*one)),
                many => {
                    let s = d.source(many[0]);
                    format!("${{OcsfPrefix}}{}*", &s[..s.rfind('-').unwrap() + 1])
                }
            })
            .collect();
        assert_eq!(writes.len(), expected.len(), "{binary}: {writes:?}");
        for (w, e) in writes.iter().zip(&expected) {
            assert!(w.ends_with(e.as_str()), "{binary}: {w} is not {e}");
        }
    }
}

#[test]
fn no_horizon_and_retention_the_template_allows_makes_reconciliation_read_expired_objects() {
    let t = template();
    let pattern = t["Parameters"]["ReconcileHorizon"]["AllowedPattern"]
        .as_str()
        .unwrap();
    let allowed = regex_lite::Regex::new(pattern).unwrap();
    // The rule's list: the retentions it refuses.
    let rule = &t["Rules"]["RetentionOutlastsReconciliation"];
    let refused: Vec<u64> = serde_yaml::to_string(&rule["Assertions"][0]["Assert"])
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(!refused.is_empty());
    let longest = ["7d", "168h", "9999m", "99999s", "24h", "6m"];
    let too_long = ["8d", "169h", "10000m", "100000s", "1w"];
    for h in longest {
        assert!(allowed.is_match(h), "{h}");
    }
    for h in too_long {
        assert!(!allowed.is_match(h), "{h}");
    }
    for days in 1..=30u64 {
        let config = tv1_connector::config::PullerConfig::from_map(
            &[
                ("TV1_TOKEN_PARAM", "/p"),
                ("BUCKET", "b"),
                ("TV1_DATA_RETENTION_DAYS", &days.to_string()),
                ("TV1_RECONCILE_HORIZON", "7d"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        assert_eq!(
            refused.contains(&days),
            config.is_err(),
            "DataRetentionDays {days} with the longest horizon the template allows"
        );
    }
}

#[test]
fn the_alerts_and_oat_tables_name_the_fields_their_items_have() {
    use tv1_connector::audit::simulate::{GenerateAlerts, generate_alerts, generate_detections};
    let t = template();
    let now = chrono::Utc::now();
    let alert = generate_alerts(&GenerateAlerts {
        count: 1,
        from: now - chrono::Duration::hours(1),
        to: now,
        change_after_secs: (60, 60),
        seed: 1,
    })
    .remove(0);
    let detection = generate_detections(1, now - chrono::Duration::hours(1), now, 60, 1).remove(0);
    for (table, item, own) in [
        ("AlertsTable", alert.json, "version_id"),
        ("OatTable", detection.json, "entry_id"),
    ] {
        let item: serde_json::Value = serde_json::from_str(&item).unwrap();
        let keys: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.to_ascii_lowercase())
            .collect();
        let input = &t["Resources"][table]["Properties"]["TableInput"];
        let columns: Vec<String> = input["StorageDescriptor"]["Columns"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| c["Name"].as_str().unwrap().to_owned())
            .filter(|c| c != own && c != "time_error")
            .collect();
        // Fields the simulator's items do not carry but the API's schema has (optional ones).
        let optional = ["firstinvestigateddatetime", "incidentid", "caseid"];
        for c in &columns {
            assert!(
                keys.contains(c) || optional.contains(&c.as_str()),
                "{table}: column {c} is no field of the items"
            );
        }
        for k in &keys {
            assert!(
                columns.contains(k),
                "{table} lacks a column for the items' {k}"
            );
        }
        let mapping = &input["StorageDescriptor"]["SerdeInfo"]["Parameters"];
        assert_eq!(mapping[format!("mapping.{own}").as_str()], "_id");
    }
}
