//! bench-report: combine loadgen JSON reports of one run (a directory) into
//! `combined.json` and `summary.md`: one table per case with a column per target
//! (clawsocket, cluster1, cluster2, …, bare) and, when both ran, the ratio
//! ClawSocket / bare for every figure. A row no target has a figure for is left out.
//!
//! Usage: bench-report DIR [--env FILE]   (reads DIR/*.json written by run.sh:
//! `<case>.<target>.json`; FILE is a JSON object describing the machine and run)

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// (label, JSON pointer, lower is better)
fn metrics(scenario: &str) -> Vec<(&'static str, &'static str, bool)> {
    let mut m = match scenario {
        "idle" => vec![
            ("connections held", "/connections/held_to_end", false),
            ("broker RSS after hold (MiB)", "/broker_rss_bytes/after_hold", true),
            ("bytes per connection", "/bytes_per_connection", true),
            ("handshake p99 ms", "/handshake_ms/p99", true),
            ("redis used memory after hold (MiB)", "/redis_used_memory_bytes/after_hold", true),
        ],
        "stream" => vec![
            ("turns ok", "/turns/ok", false),
            ("deltas", "/deltas", false),
            ("deltas/s", "/deltas_per_sec", false),
            ("agent deltas/s (--tabs: the sender tab's)", "/agent_deltas_per_sec", false),
            ("time to first delta p50 ms", "/ttfd_ms/p50", true),
            ("time to first delta p99 ms", "/ttfd_ms/p99", true),
            ("relay latency p50 ms", "/latency_ms/p50", true),
            ("relay latency p90 ms", "/latency_ms/p90", true),
            ("relay latency p99 ms", "/latency_ms/p99", true),
            ("relay latency max ms", "/latency_ms/max", true),
            ("sender tab's latency p50 ms", "/latency_sender_tab_ms/p50", true),
            ("sender tab's latency p99 ms", "/latency_sender_tab_ms/p99", true),
            ("other tabs' latency p50 ms", "/latency_other_tabs_ms/p50", true),
            ("other tabs' latency p99 ms", "/latency_other_tabs_ms/p99", true),
            ("broker CPU µs/delta", "/cpu/broker/cpu_us_per_delta", true),
            ("broker cores", "/cpu/broker/cores", true),
            ("redis CPU µs/delta", "/cpu/redis/cpu_us_per_delta", true),
            ("redis cores", "/cpu/redis/cores", true),
            ("redis commands/delta", "/cpu/redis/commands_per_delta", true),
            ("redis bytes in/delta", "/cpu/redis/net_in_bytes_per_delta", true),
            ("redis bytes out/delta", "/cpu/redis/net_out_bytes_per_delta", true),
            ("agent CPU µs/delta", "/cpu/agent/cpu_us_per_delta", true),
            ("loadgen CPU µs/delta", "/cpu/loadgen/cpu_us_per_delta", true),
            ("broker RSS after (MiB)", "/broker_rss_bytes/after", true),
            ("machine busy cores (of 2)", "/cpu/machine/busy_cores", true),
            ("other processes' cores", "/cpu/machine/others_cores", true),
        ],
        "fanout" => vec![
            ("members complete", "/members_complete", false),
            ("deltas delivered", "/deltas", false),
            ("deltas/s delivered", "/deltas_per_sec", false),
            ("relay latency p50 ms", "/latency_ms/p50", true),
            ("relay latency p99 ms", "/latency_ms/p99", true),
            ("relay latency max ms", "/latency_ms/max", true),
            ("member spread p50 ms", "/spread_ms/p50", true),
            ("member spread p99 ms", "/spread_ms/p99", true),
            ("member spread max ms", "/spread_ms/max", true),
            ("broker CPU µs/delta", "/cpu/broker/cpu_us_per_delta", true),
            ("redis CPU µs/delta", "/cpu/redis/cpu_us_per_delta", true),
            ("redis commands/delta", "/cpu/redis/commands_per_delta", true),
            ("loadgen CPU µs/delta", "/cpu/loadgen/cpu_us_per_delta", true),
            ("machine busy cores (of 2)", "/cpu/machine/busy_cores", true),
            ("other processes' cores", "/cpu/machine/others_cores", true),
        ],
        "connect" => vec![
            ("connections ok", "/connections/ok", false),
            ("connections/s", "/connections_per_sec", false),
            ("handshake p50 ms", "/handshake_ms/p50", true),
            ("handshake p99 ms", "/handshake_ms/p99", true),
            ("handshake max ms", "/handshake_ms/max", true),
            ("broker cores", "/cpu/broker/cores", true),
        ],
        _ => vec![],
    };
    m.push(("errors", "/errors", true));
    m
}

fn fmt(v: &Value, label: &str) -> String {
    match v {
        Value::Null => "n/a".into(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if label.contains("MiB") {
                format!("{:.1}", x / 1048576.0)
            } else if x.fract() == 0.0 {
                format!("{}", x as i64)
            } else {
                format!("{x:.3}")
            }
        }
        other => other.to_string(),
    }
}

/// The targets of a case in table order: ClawSocket alone, the cluster targets, any
/// other, the bare relay last.
fn target_order<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let rank = |name: &str| match name {
        "clawsocket" => 0,
        "bare" => 3,
        other if other.starts_with("cluster") => 1,
        _ => 2,
    };
    let mut names: Vec<String> = names.cloned().collect();
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    names
}

fn column_name(target: &str) -> String {
    match target {
        "clawsocket" => "ClawSocket".to_string(),
        "bare" => "bare relay".to_string(),
        other => other.to_string(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: bench-report DIR [--env FILE]");
        std::process::exit(2);
    };
    let mut env = Value::Null;
    while let Some(a) = args.next() {
        if a == "--env" {
            if let Some(f) = args.next() {
                env =
                    std::fs::read_to_string(&f).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or(Value::Null);
            }
        }
    }
    // case -> target -> report
    let mut cases: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir).expect("read dir").flatten().collect();
    entries.sort_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    for e in entries {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".json") || name == "combined.json" || name == "env.json" {
            continue;
        }
        let Some(stem) = name.strip_suffix(".json") else { continue };
        let Some((case, target)) = stem.rsplit_once('.') else { continue };
        let Ok(v) = std::fs::read_to_string(&p).map(|s| serde_json::from_str::<Value>(&s)) else { continue };
        let Ok(v) = v else { continue };
        if !order.contains(&case.to_string()) {
            order.push(case.to_string());
        }
        cases.entry(case.to_string()).or_default().insert(target.to_string(), v);
    }
    let mut md = String::new();
    md.push_str("# Benchmark run\n\n");
    if !env.is_null() {
        md.push_str("| | |\n|---|---|\n");
        if let Some(o) = env.as_object() {
            for (k, v) in o {
                md.push_str(&format!(
                    "| {k} | {} |\n",
                    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
                ));
            }
        }
        md.push('\n');
    }
    let mut combined = Vec::new();
    let mut total_errors = 0u64;
    for case in &order {
        let t = &cases[case];
        let claw = t.get("clawsocket").cloned().unwrap_or(Value::Null);
        let bare = t.get("bare").cloned().unwrap_or(Value::Null);
        let targets = target_order(t.keys());
        let first = &t[&targets[0]];
        let scen = first["scenario"].as_str().unwrap_or("?").to_string();
        md.push_str(&format!("## {case} ({scen})\n\nparams: `{}`\n\n", first["params"]));
        let with_ratio = !claw.is_null() && !bare.is_null();
        md.push_str("| figure |");
        for target in &targets {
            md.push_str(&format!(" {} |", column_name(target)));
        }
        md.push_str(if with_ratio { " ratio ClawSocket/bare |\n|---|" } else { "\n|---|" });
        md.push_str(&"---:|".repeat(targets.len() + with_ratio as usize));
        md.push('\n');
        let mut rows = Vec::new();
        for (label, ptr, _lower) in metrics(&scen) {
            let values: BTreeMap<&String, Value> =
                targets.iter().map(|target| (target, t[target].pointer(ptr).cloned().unwrap_or(Value::Null))).collect();
            if values.values().all(Value::is_null) {
                continue;
            }
            let c = claw.pointer(ptr).cloned().unwrap_or(Value::Null);
            let b = bare.pointer(ptr).cloned().unwrap_or(Value::Null);
            let ratio = match (c.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if y != 0.0 && label != "errors" => Value::from((x / y * 100.0).round() / 100.0),
                _ => Value::Null,
            };
            md.push_str(&format!("| {label} |"));
            for target in &targets {
                md.push_str(&format!(" {} |", fmt(&values[target], label)));
            }
            if with_ratio {
                md.push_str(&format!(" {} |", fmt(&ratio, "")));
            }
            md.push('\n');
            rows.push(json!({"figure": label, "clawsocket": c, "bare": b, "ratio": ratio, "targets": values}));
        }
        for target in &targets {
            let (name, r) = (column_name(target), &t[target]);
            total_errors += r["errors"].as_u64().unwrap_or(0);
            if let Some(s) = r["error_samples"].as_array().filter(|a| !a.is_empty()) {
                md.push_str(&format!("\n{name} errors {}: \n", r["error_kinds"]));
                for x in s {
                    md.push_str(&format!("- `{}`\n", x.as_str().unwrap_or("")));
                }
            }
            if !r.is_null() && r["complete"] == Value::Bool(false) {
                md.push_str(&format!("\n**{name}: incomplete run**\n"));
            }
        }
        md.push('\n');
        combined.push(
            json!({"case": case, "scenario": scen, "rows": rows, "clawsocket": claw, "bare": bare, "reports": t}),
        );
    }
    // The 20 ms paced runs at several user counts: where does p99 pass 50 ms?
    let mut sweep: Vec<(u64, Value, Value)> = Vec::new();
    for case in &order {
        if !case.contains("paced") {
            continue;
        }
        let t = &cases[case];
        let get = |k: &str| {
            t.get(k).map(|r| r.pointer("/latency_ms/p99").cloned().unwrap_or(Value::Null)).unwrap_or(Value::Null)
        };
        let users = t.values().find_map(|r| r.pointer("/params/connections").and_then(Value::as_u64)).unwrap_or(0);
        sweep.push((users, get("clawsocket"), get("bare")));
    }
    sweep.sort_by_key(|x| x.0);
    let mut sweep_json = Value::Null;
    if sweep.len() > 1 {
        md.push_str("## Paced sweep: relay latency p99 by concurrent streaming users\n\n");
        md.push_str("| users | ClawSocket p99 ms | bare p99 ms | ratio |\n|---:|---:|---:|---:|\n");
        let first_over = |pick: fn(&(u64, Value, Value)) -> &Value| {
            sweep.iter().find(|x| pick(x).as_f64().is_some_and(|v| v > 50.0)).map(|x| x.0)
        };
        for (u, c, b) in &sweep {
            let ratio = match (c.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if y > 0.0 => Value::from((x / y * 100.0).round() / 100.0),
                _ => Value::Null,
            };
            md.push_str(&format!("| {u} | {} | {} | {} |\n", fmt(c, ""), fmt(b, ""), fmt(&ratio, "")));
        }
        let fc = first_over(|x| &x.1);
        let fb = first_over(|x| &x.2);
        let show = |v: Option<u64>| v.map(|u| u.to_string()).unwrap_or_else(|| "not reached".into());
        md.push_str(&format!(
            "\nFirst user count whose p99 passes 50 ms: ClawSocket {}, bare relay {}.\n\n",
            show(fc),
            show(fb)
        ));
        sweep_json = json!({
            "rows": sweep.iter().map(|(u, c, b)| json!({"users": u, "clawsocket_p99_ms": c, "bare_p99_ms": b})).collect::<Vec<_>>(),
            "first_users_over_50ms": {"clawsocket": fc, "bare": fb},
        });
    }
    let out = json!({"env": env, "cases": combined, "paced_sweep": sweep_json, "errors": total_errors});
    std::fs::write(dir.join("combined.json"), serde_json::to_string_pretty(&out).unwrap())
        .expect("write combined.json");
    std::fs::write(dir.join("summary.md"), &md).expect("write summary.md");
    print!("{md}");
}
