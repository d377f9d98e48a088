//! Running migrate in a cluster (docs/kubernetes.md): the Kubernetes manifests use only flags
//! and config keys the binary has, the alert rules and the dashboard only metric families the
//! engine declares (src/obs/metrics.rs `FAMILIES`), the rules pass `promtool check rules` and
//! their unit tests, the dashboard's queries parse, and a running follow answers `/healthz`,
//! `/readyz` and a `/metrics` that `promtool check metrics` accepts.
//!
//! promtool comes from Debian's `prometheus` package (scripts/install-deps.sh); without it
//! these tests fail rather than skip.

mod support;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const VERBS: &[&str] = &["check", "snapshot", "follow", "verify", "cutover", "status"];

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The families declared in src/obs/metrics.rs `FAMILIES` (read from the source: the binary
/// only shows the families that have series).
fn families() -> BTreeSet<String> {
    let src = read("src/obs/metrics.rs");
    let start = src
        .find("pub const FAMILIES")
        .expect("FAMILIES in src/obs/metrics.rs");
    let body = &src[start..];
    let body = &body[..body.find("\n];").expect("end of FAMILIES")];
    // the string literals that are metric names (the others are help texts)
    let names: BTreeSet<String> = body
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("migrate_")
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect();
    assert!(
        names.len() >= 10 && names.contains("migrate_up"),
        "could not read FAMILIES: {names:?}"
    );
    names
}

/// Every `migrate_...` identifier in `text` (PromQL, YAML or JSON).
fn metric_names(text: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("migrate_") {
        let at = i + off;
        let starts_word = at == 0 || !ident(b[at - 1] as char);
        let end = text[at..]
            .find(|c: char| !ident(c))
            .map_or(text.len(), |e| at + e);
        // (a bare `migrate_` is the prefix, not a name)
        if starts_word && end > at + "migrate_".len() {
            out.insert(text[at..end].to_string());
        }
        i = end.max(at + 1);
    }
    out
}

fn assert_known(what: &str, used: &BTreeSet<String>) {
    let known = families();
    let unknown: Vec<&String> = used.iter().filter(|n| !known.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "{what} uses metrics that src/obs/metrics.rs FAMILIES does not declare: {unknown:?}"
    );
}

/// promtool, or a failure that says how to get it.
fn promtool() -> &'static str {
    let ok = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "promtool not found: run scripts/install-deps.sh (it installs Debian's `prometheus` package, which ships promtool)"
    );
    "promtool"
}

fn promtool_ok(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The long options `migrate [VERB] --help` lists.
fn help_flags(verb: Option<&str>) -> BTreeSet<String> {
    let mut c = Command::new(support::migrate_bin());
    c.env_remove("MIGRATE_CONFIG");
    if let Some(v) = verb {
        c.arg(v);
    }
    let out = c.arg("--help").output().expect("migrate --help");
    assert!(out.status.success(), "migrate {verb:?} --help failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags: BTreeSet<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|t| t.starts_with("--") && t.len() > 2)
        .map(str::to_string)
        .collect();
    assert!(flags.contains("--config"), "{verb:?}: {text}");
    flags
}

struct Helps(BTreeMap<Option<String>, BTreeSet<String>>);

impl Helps {
    fn new() -> Helps {
        let mut m = BTreeMap::new();
        m.insert(None, help_flags(None));
        for v in VERBS {
            m.insert(Some(v.to_string()), help_flags(Some(v)));
        }
        Helps(m)
    }
    fn check(&self, verb: Option<&str>, flag: &str, at: &str) {
        let set = &self.0[&verb.map(str::to_string)];
        assert!(
            set.contains(flag),
            "{at}: `{flag}` is not an option of `migrate {}--help`",
            verb.map(|v| format!("{v} ")).unwrap_or_default()
        );
    }
}

/// A `--flag` token without its `=value`, or None.
fn flag_of(token: &str) -> Option<String> {
    let t = token.trim_matches(|c: char| "`'\"(),;.:!".contains(c));
    let name = t.split('=').next().unwrap_or("");
    (name.starts_with("--")
        && name.len() > 2
        && name[2..]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    .then(|| name.to_string())
}

fn bare(token: &str) -> &str {
    token.trim_matches(|c: char| "`'\"(),;:".contains(c))
}

/// Check the commands that run `migrate` in a line: the options after each `migrate` in
/// command position (first on the line, after `--`, `&&`, `;`, `|`, `exec`, `sudo`, or opening
/// inline code) up to the end of that command, against the help of the verb named there.
/// False if the line has no such command.
fn check_command_line(line: &str, helps: &Helps, at: &str) -> bool {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let separator = |t: &str| matches!(t, "|" | "&&" | ";" | "||");
    let starts: Vec<usize> = (0..tokens.len())
        .filter(|&i| {
            bare(tokens[i]) == "migrate"
                && (i == 0
                    || tokens[i].starts_with('`')
                    || separator(tokens[i - 1])
                    || matches!(tokens[i - 1], "--" | "exec" | "sudo" | "$" | "#"))
        })
        .collect();
    for &start in &starts {
        let mut cmd = Vec::new();
        if !tokens[start].ends_with('`') {
            // (`migrate` alone is a name, not a command)
            for t in &tokens[start + 1..] {
                if separator(t) || bare(t) == "migrate" {
                    break;
                }
                cmd.push(*t);
                if t.trim_end_matches([',', ')', ';', '.', ':']).ends_with('`') {
                    break;
                }
            }
        }
        let verb = cmd.iter().map(|t| bare(t)).find(|t| VERBS.contains(t));
        for t in &cmd {
            if let Some(f) = flag_of(t) {
                helps.check(verb, &f, at);
            }
        }
    }
    !starts.is_empty()
}

/// The items of each `args:` list of a manifest (commented-out items included: they must
/// work when uncommented).
fn args_lists(yaml: &str) -> Vec<Vec<String>> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut lists = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(l) = lines.next() {
        if l.trim() != "args:" {
            continue;
        }
        let base = indent(l);
        let mut items = Vec::new();
        while let Some(n) = lines.peek() {
            let t = n.trim();
            if t.is_empty() {
                lines.next();
                continue;
            }
            if indent(n) < base || (indent(n) == base && !t.starts_with('-')) {
                break;
            }
            let item = t
                .strip_prefix("- ")
                .or_else(|| t.strip_prefix("# - "))
                .map(|i| i.split(" #").next().unwrap_or(i).trim().trim_matches('"'));
            match item {
                Some(i) => items.push(i.to_string()),
                None if t.starts_with('#') => {}
                None => break,
            }
            lines.next();
        }
        lists.push(items);
    }
    lists
}

fn manifests() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root().join("deploy/k8s")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("deploy/k8s").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 5, "manifests: {out:?}");
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// The text of the block scalar `key: |` in `yaml`, unindented.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines();
    let head = lines
        .by_ref()
        .find(|l| l.trim() == format!("{key}: |"))
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let base = head.len() - head.trim_start().len();
    let mut out = String::new();
    let mut cut = None;
    for l in lines {
        if !l.trim().is_empty() && l.len() - l.trim_start().len() <= base {
            break;
        }
        let c = *cut.get_or_insert(l.len() - l.trim_start().len());
        out.push_str(l.get(c..).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// Every `--flag` in the manifests exists in the `--help` of the verb it is used with: in
/// `args:` lists (the verb is the list's verb word), in commented `migrate ...` command lines,
/// and in other comments (checked against the verb named on that line, or the file's verb).
/// Lines with kubectl or kustomize commands are not migrate's.
#[test]
fn manifests_use_real_flags() {
    let helps = Helps::new();
    let mut verbs_seen = BTreeSet::new();
    for path in manifests() {
        let text = std::fs::read_to_string(&path).expect("read manifest");
        let name = rel(&path);
        let mut file_verb = None;
        for items in args_lists(&text) {
            let verb = items.iter().find(|i| VERBS.contains(&i.as_str())).cloned();
            assert!(verb.is_some(), "{name}: args without a verb: {items:?}");
            assert!(
                items[0] != "migrate",
                "{name}: the image's ENTRYPOINT is migrate; args start with its options"
            );
            for i in &items {
                if let Some(f) = flag_of(i) {
                    assert!(i.starts_with("--"), "{name}: {i}");
                    helps.check(verb.as_deref(), &f, &name);
                }
            }
            file_verb = verb.clone();
            verbs_seen.extend(verb);
        }
        for (n, line) in text.lines().enumerate() {
            let at = format!("{name}:{}", n + 1);
            let Some(comment) = line.split_once('#').map(|(_, c)| c) else {
                continue;
            };
            if comment.contains("kubectl") || comment.contains("kustomize") {
                continue;
            }
            if check_command_line(comment, &helps, &at) {
                continue;
            }
            let mut verb = file_verb.clone();
            for t in comment.split_whitespace() {
                if VERBS.contains(&bare(t)) {
                    verb = Some(bare(t).to_string());
                }
                if let Some(f) = flag_of(t) {
                    helps.check(verb.as_deref(), &f, &at);
                }
            }
        }
    }
    for v in ["snapshot", "follow"] {
        assert!(
            verbs_seen.contains(v),
            "no manifest runs {v}: {verbs_seen:?}"
        );
    }
}

/// The migrate commands in docs/kubernetes.md (code blocks and inline code) use real options.
#[test]
fn doc_commands_use_real_flags() {
    let helps = Helps::new();
    let doc = read("docs/kubernetes.md");
    let mut checked = 0;
    for (n, line) in doc.lines().enumerate() {
        if check_command_line(line, &helps, &format!("docs/kubernetes.md:{}", n + 1)) {
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "few migrate commands found in docs/kubernetes.md"
    );
}

/// The ConfigMap's config file is one the binary accepts (every key a real option), and the
/// paths, ports and users in the manifests, the config and the Dockerfile agree.
#[test]
fn manifests_agree_with_config_and_image() {
    let cm = read("deploy/k8s/configmap.yaml");
    let toml_text = block_scalar(&cm, "migrate.toml");
    let cfg: toml::Table = toml::from_str(&toml_text).expect("migrate.toml in configmap.yaml");
    let dir = tempdir();
    let file = dir.path().join("migrate.toml");
    std::fs::write(&file, &toml_text).expect("write config");
    for verb in VERBS {
        // the file is read (and every key checked) before the arguments are parsed
        let out = Command::new(support::migrate_bin())
            .env_remove("MIGRATE_CONFIG")
            .arg("--config")
            .arg(&file)
            .args([verb, "--help"])
            .output()
            .expect("migrate --config");
        assert!(
            out.status.success(),
            "configmap.yaml's migrate.toml with {verb}: {}",
            stderr(&out)
        );
    }
    let s = |k: &str| {
        cfg.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("migrate.toml: no {k}"))
            .to_string()
    };
    let port = s("metrics_addr")
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    assert_eq!(port, "9187", "metrics_addr");
    assert!(
        s("metrics_addr").starts_with("0.0.0.0:"),
        "the kubelet and Prometheus reach the pod's address, not 127.0.0.1"
    );
    assert!(
        s("state").starts_with("/var/lib/migrate/"),
        "the state file must be on the claim"
    );
    let secret = read("deploy/k8s/secret.example.yaml");
    for k in ["source_password_file", "target_password_file"] {
        let p = s(k);
        let file = p
            .strip_prefix("/etc/migrate/secrets/")
            .unwrap_or_else(|| panic!("{k} {p} is not in the Secret's mount"));
        assert!(
            secret.contains(&format!("  {file}: ")),
            "secret.example.yaml has no key {file}"
        );
    }
    let docker = read("Dockerfile");
    assert!(
        docker.contains("\nEXPOSE 9187\n"),
        "Dockerfile: EXPOSE 9187"
    );
    assert!(
        docker.contains("\nENTRYPOINT [\"migrate\"]\n"),
        "Dockerfile: ENTRYPOINT"
    );
    assert!(
        docker.contains("\nUSER 10001:10001\n"),
        "Dockerfile: numeric non-root USER"
    );
    assert!(
        !docker.contains("mariadb-client"),
        "the image needs no MariaDB client"
    );

    let mut workloads = 0;
    for path in manifests() {
        let text = std::fs::read_to_string(&path).expect("read");
        let name = rel(&path);
        assert!(!text.contains("namespace:"), "{name}: namespace-agnostic");
        if !(text.contains("\nkind: Job\n") || text.contains("\nkind: Deployment\n")) {
            continue;
        }
        workloads += 1;
        for needle in [
            "prometheus.io/scrape: \"true\"",
            "prometheus.io/port: \"9187\"",
            "prometheus.io/path: \"/metrics\"",
            "containerPort: 9187",
            "runAsNonRoot: true",
            "runAsUser: 10001",
            "readOnlyRootFilesystem: true",
            "allowPrivilegeEscalation: false",
            "mountPath: /var/lib/migrate",
            "claimName: migrate-state",
            "mountPath: /etc/migrate/secrets",
            "secretName: migrate-passwords",
            "mountPath: /etc/migrate/migrate.toml",
            "name: migrate-config",
            "- --config=/etc/migrate/migrate.toml",
            "resources:",
            "limits:",
            "mountPath: /tmp",
        ] {
            assert!(text.contains(needle), "{name}: no `{needle}`");
        }
        if text.contains("\nkind: Deployment\n") {
            for needle in [
                "replicas: 1",
                "type: Recreate",
                "path: /healthz",
                "path: /readyz",
                "livenessProbe:",
                "readinessProbe:",
                "- follow",
            ] {
                assert!(text.contains(needle), "{name}: no `{needle}`");
            }
        }
    }
    assert!(workloads >= 2, "no Job/Deployment found");
    // kustomization lists files that exist
    let k = read("deploy/k8s/kustomization.yaml");
    for l in k.lines().filter_map(|l| l.trim().strip_prefix("- ")) {
        if l.ends_with(".yaml") {
            assert!(
                root().join("deploy/k8s").join(l).exists(),
                "kustomization: {l}"
            );
        }
    }
}

/// The alert rules: valid, unit-tested, and on metrics the engine exposes.
#[test]
fn prometheus_rules_check_and_test() {
    let deploy = root().join("deploy");
    let out = promtool_ok(&["check", "rules", "prometheus-rules.yaml"], &deploy);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool_ok(&["test", "rules", "prometheus-rules.test.yaml"], &deploy);
    assert!(out.contains("SUCCESS"), "{out}");
    let rules = read("deploy/prometheus-rules.yaml");
    // `expr:` lines (and the folded lines under `expr: >-`)
    let mut exprs = String::new();
    let mut folded = None;
    for l in rules.lines() {
        let indent = l.len() - l.trim_start().len();
        if let Some(base) = folded {
            if indent > base && !l.trim().is_empty() {
                exprs.push_str(l);
                exprs.push('\n');
                continue;
            }
            folded = None;
        }
        if let Some(e) = l.trim().strip_prefix("expr:") {
            if e.trim().starts_with('>') || e.trim().starts_with('|') {
                folded = Some(indent);
            } else {
                exprs.push_str(e);
                exprs.push('\n');
            }
        }
    }
    let used = metric_names(&exprs);
    for m in [
        "migrate_follow_lag_seconds",
        "migrate_transactions_applied_total",
        "migrate_follow_events_behind",
        "migrate_verify_differences_total",
        "migrate_cutover_step",
        "migrate_up",
    ] {
        assert!(used.contains(m), "no rule on {m}: {used:?}");
    }
    // every migrate_ name anywhere in the rules, their descriptions and their tests
    assert_known("deploy/prometheus-rules.yaml", &metric_names(&rules));
    assert_known(
        "deploy/prometheus-rules.test.yaml",
        &metric_names(&read("deploy/prometheus-rules.test.yaml")),
    );
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

/// The dashboard: every metric name is declared, every declared family has a panel, the
/// queries are valid PromQL (promtool parses them as recording rules), panel ids are unique
/// and the panels do not overlap.
#[test]
fn grafana_dashboard() {
    let text = read("deploy/grafana-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("grafana-dashboard.json");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    let used = metric_names(&exprs.join("\n"));
    assert_known("deploy/grafana-dashboard.json", &used);
    let missing: Vec<String> = families().difference(&used).cloned().collect();
    assert!(
        missing.is_empty(),
        "families without a panel in deploy/grafana-dashboard.json: {missing:?}"
    );
    assert_known(
        "deploy/grafana-dashboard.json (any text)",
        &metric_names(&text),
    );

    // PromQL: the panels' queries with Grafana's variables replaced
    let dir = tempdir();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(i64, i64, i64, i64, String)> = Vec::new();
    let mut n = 0;
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?").to_string();
        assert!(
            ids.insert(p["id"].as_i64().expect("id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_i64().expect("x"),
            g["y"].as_i64().expect("y"),
            g["w"].as_i64().expect("w"),
            g["h"].as_i64().expect("h"),
        );
        assert!(x + w <= 24, "{title}: wider than the grid");
        for (bx, by, bw, bh, other) in &boxes {
            let apart = x + w <= *bx || *bx + *bw <= x || y + h <= *by || *by + *bh <= y;
            assert!(apart, "panels overlap: {title} and {other}");
        }
        boxes.push((x, y, w, h, title.clone()));
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert!(t["refId"].is_string(), "{title}: refId");
            let e = t["expr"].as_str().expect("expr");
            let e = e
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$instance", ".*");
            assert!(!e.contains('$'), "{title}: unknown variable in {e}");
            n += 1;
            rules.push_str(&format!(
                "      - record: dashboard:query_{n}\n        expr: {}\n",
                serde_json::to_string(&e).expect("quote")
            ));
        }
    }
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).expect("write");
    promtool_ok(
        &["check", "rules", file.to_str().expect("path")],
        dir.path(),
    );
}

fn http_status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {resp:?}"))
}

fn http_body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A real follow: `/healthz` and `/readyz` are 200 while it streams, 503 with a one-line reason
/// while the target is down, 200 again after; `/metrics` passes `promtool check metrics`;
/// unknown paths are 404.
#[test]
fn probes_and_scrape_of_a_running_follow() {
    let promtool = promtool();
    let src = Server::source("deploy-src");
    let mut dst = Server::target("deploy-dst");
    src.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT); INSERT INTO app.t SELECT seq, 0 FROM app.seq_1_to_10;");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "app"],
    ));
    let port = free_port();
    let child = migrate_cmd(
        &src.url(),
        &dst.url(),
        &state,
        &[
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--ready-max-lag",
            "30",
            "follow",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("follow");
    // ends follow whatever happens below
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);

    wait_for("/readyz 200", 30, || {
        http_status(&http_get(port, "/readyz")) == 200
    });
    let h = http_get(port, "/healthz");
    assert_eq!(http_status(&h), 200, "{h}");
    assert_eq!(http_body(&h), "ok\n");
    let r = http_get(port, "/readyz");
    assert!(http_body(&r).starts_with("ready: lag "), "{r}");
    assert_eq!(http_status(&http_get(port, "/nope")), 404);

    src.sql("UPDATE app.t SET v = 1 WHERE id = 1");
    wait_for("applied", 30, || {
        dst.try_sql("SELECT v FROM app.t WHERE id = 1")
            .ok()
            .as_deref()
            == Some("1")
    });
    let m = http_get(port, "/metrics");
    assert_eq!(http_status(&m), 200);
    let body = http_body(&m).to_string();
    assert_known("/metrics of follow", &metric_names(&body));
    let mut pc = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool check metrics");
    std::io::Write::write_all(pc.stdin.as_mut().expect("stdin"), body.as_bytes())
        .expect("write metrics");
    drop(pc.stdin.take());
    let out = pc.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- scrape ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // the target goes away: follow reconnects, both probes 503 with the reason
    dst.stop();
    src.sql("UPDATE app.t SET v = 2 WHERE id = 1");
    wait_for("/healthz 503 during the outage", 60, || {
        http_status(&http_get(port, "/healthz")) == 503
    });
    let h = http_get(port, "/healthz");
    assert!(
        http_body(&h).contains("reconnecting") && http_body(&h).lines().count() == 1,
        "{h}"
    );
    let r = http_get(port, "/readyz");
    assert_eq!(http_status(&r), 503, "{r}");
    assert!(http_body(&r).contains("migrate_up 0"), "{r}");

    dst.restart();
    wait_for("/healthz 200 after the outage", 90, || {
        http_status(&http_get(port, "/healthz")) == 200
    });
    wait_for("/readyz 200 after the outage", 60, || {
        http_status(&http_get(port, "/readyz")) == 200
    });
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.0.id().to_string())
        .status();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "follow did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "SIGTERM must end follow with 0: {status}");
}

#[test]
fn install_deps_installs_promtool() {
    let s = read("scripts/install-deps.sh");
    let want = s
        .lines()
        .find(|l| l.starts_with("want=("))
        .expect("want=( in scripts/install-deps.sh");
    assert!(
        want.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .any(|w| w == "prometheus"),
        "scripts/install-deps.sh must install prometheus (promtool) by default: {want}"
    );
}
