//! Every bad input gives one clear line, exit 2 (or 1 from check), and never shows a password.

mod support;
use std::process::Command;
use support::*;

const PW: &str = "S3cr3t-pw-xyz";

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn bad_inputs_fail_clearly() {
    let src = Server::source("bad-src");
    let dst = Server::target("bad-dst");
    src.sql(&format!(
        "CREATE USER 'mig'@'127.0.0.1' IDENTIFIED BY '{PW}'; GRANT ALL ON *.* TO 'mig'@'127.0.0.1';
         CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v INT); INSERT INTO shop.t VALUES (1, 1);
         CREATE DATABASE nokey; CREATE TABLE nokey.log (msg VARCHAR(10), n INT NULL, UNIQUE KEY (n)) ENGINE=MyISAM;"
    ));
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let mig_url = format!("mysql://mig@127.0.0.1:{}?ssl-mode=disabled", src.port);

    // wrong password (from the environment): exit 2, names the fix, never echoes it
    let out = migrate_cmd(
        &mig_url,
        &dst.url(),
        &state,
        &["snapshot", "--databases", "shop"],
    )
    .env("MIGRATE_SOURCE_PASSWORD", "wrong-password")
    .output()
    .expect("run");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1045") && stderr(&out).contains("password"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("wrong-password"));

    // right password from a file works, and appears nowhere
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, format!("{PW}\n")).expect("write pw");
    let out = migrate_cmd(
        &mig_url,
        &dst.url(),
        &state,
        &["check", "--databases", "shop"],
    )
    .arg("--source-password-file")
    .arg(&pwfile)
    .output()
    .expect("run");
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PW) && !stderr(&out).contains(PW));

    // password in the URL: works, not in logs nor in the state file
    let url_pw = format!("mysql://mig:{PW}@127.0.0.1:{}?ssl-mode=disabled", src.port);
    let out = migrate(
        &url_pw,
        &dst.url(),
        &state,
        &["snapshot", "--databases", "shop"],
    );
    assert_ok(&out);
    assert!(!stderr(&out).contains(PW) && !String::from_utf8_lossy(&out.stdout).contains(PW));
    for f in std::fs::read_dir(dir.path()).expect("ls") {
        let path = f.expect("entry").path();
        if path == pwfile {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        assert!(
            !bytes.windows(PW.len()).any(|w| w == PW.as_bytes()),
            "password found in a state file"
        );
    }

    // --help does not print environment values
    let out = migrate_cmd(&url_pw, &dst.url(), &state, &["--help"])
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PW));

    // non-empty target: check says BLOCKER (exit 1), snapshot refuses (exit 2) with a fresh state
    let state2 = dir.path().join("s2.sqlite");
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state2,
        &["check", "--databases", "shop"],
    );
    assert_eq!(code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains("BLOCKER"));
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state2,
        &["snapshot", "--databases", "shop"],
    );
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("already has tables") && stderr(&out).contains("--reuse-target"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM shop.t"),
        "1",
        "refused snapshot must not touch the target"
    );
    // ... unless told to reuse it
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state2,
        &["snapshot", "--databases", "shop", "--reuse-target"],
    );
    assert_ok(&out);

    // a database that does not exist
    let out = migrate(
        &src.url(),
        &dst.url(),
        &dir.path().join("s3.sqlite"),
        &["snapshot", "--databases", "nope"],
    );
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("`nope` does not exist"),
        "{}",
        stderr(&out)
    );

    // a non-transactional table without a usable key (nullable unique key does not count)
    let out = migrate(
        &src.url(),
        &dst.url(),
        &dir.path().join("s4.sqlite"),
        &["snapshot", "--databases", "nokey"],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("nokey.log"), "{}", stderr(&out));
    assert!(
        dst.try_sql("USE nokey").is_err(),
        "nothing may be written for a refused snapshot"
    );
    let out = migrate(
        &src.url(),
        &dst.url(),
        &dir.path().join("s4.sqlite"),
        &["check", "--databases", "nokey", "--json"],
    );
    assert_eq!(code(&out), 1);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(j["findings"]
        .as_array()
        .expect("array")
        .iter()
        .any(|f| f["subject"] == "nokey.log" && f["severity"] == "blocker"));

    // a source user without the replication grants: check names them as GRANT statements
    src.sql("CREATE USER 'ro'@'127.0.0.1'; GRANT SELECT ON *.* TO 'ro'@'127.0.0.1';");
    let ro = format!("mysql://ro@127.0.0.1:{}?ssl-mode=disabled", src.port);
    let out = migrate(
        &ro,
        &dst.url(),
        &dir.path().join("s7.sqlite"),
        &["check", "--databases", "shop", "--json"],
    );
    assert_eq!(code(&out), 1);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let grants = j["findings"]
        .as_array()
        .expect("array")
        .iter()
        .find(|f| f["server"] == "source" && f["subject"] == "grants")
        .cloned();
    let fix = grants
        .as_ref()
        .and_then(|g| g["fix"].as_str())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        fix,
        "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'ro'@'127.0.0.1'; GRANT SHOW VIEW, EVENT ON `shop`.* TO 'ro'@'127.0.0.1';",
        "{grants:?}"
    );

    // the same options from a TOML config file, JSON logs
    let cfg = dir.path().join("migrate.toml");
    std::fs::write(
        &cfg,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\ndatabases = [\"shop\"]\nlog_format = \"json\"\n",
            src.url(),
            dst.url()
        ),
    )
    .expect("write config");
    let out = Command::new(support::migrate_bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("--config")
        .arg(&cfg)
        .arg("--state")
        .arg(dir.path().join("s8.sqlite"))
        .args(["snapshot", "--reuse-target"])
        .output()
        .expect("run");
    assert_ok(&out);
    let first_log = stderr(&out)
        .lines()
        .find(|l| l.starts_with('{'))
        .map(str::to_string)
        .expect("a JSON log line");
    let _: serde_json::Value = serde_json::from_str(&first_log).expect("log line is JSON");
    let out = Command::new(support::migrate_bin())
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .arg("check")
        .output()
        .expect("run");
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--config"), "{}", stderr(&out));

    // unreachable host
    let dead = free_port();
    let out = migrate(
        &format!("mysql://root@127.0.0.1:{dead}"),
        &dst.url(),
        &dir.path().join("s5.sqlite"),
        &["snapshot"],
    );
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot connect") && stderr(&out).contains("reachable"),
        "{}",
        stderr(&out)
    );

    // TLS required but the server offers none
    let out = migrate(
        &format!("mysql://root@127.0.0.1:{}?ssl-mode=required", src.port),
        &dst.url(),
        &dir.path().join("s6.sqlite"),
        &["snapshot"],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));

    // usage errors
    let out = migrate("postgres://x", &dst.url(), &state, &["check"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("mysql://"));
    let out = Command::new(support::migrate_bin())
        .arg("nonsense")
        .output()
        .expect("run");
    assert_eq!(code(&out), 2);
}

/// TLS with CA verification: the right CA connects, a wrong CA is rejected.
#[test]
fn tls_verify_ca() {
    let dir = tempdir();
    let d = dir.path();
    let sh = |cmd: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(d)
            .output()
            .expect("sh");
        assert!(
            ok.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=test-ca' -keyout ca.key -out ca.pem");
    sh("openssl req -newkey rsa:2048 -nodes -subj '/CN=127.0.0.1' -keyout server.key -out server.csr");
    sh("printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem");
    sh("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=other-ca' -keyout other.key -out other.pem");
    let ssl = [
        format!("--ssl-ca={}", d.join("ca.pem").display()),
        format!("--ssl-cert={}", d.join("server.pem").display()),
        format!("--ssl-key={}", d.join("server.key").display()),
    ];
    let mut args: Vec<&str> = SOURCE_ARGS.to_vec();
    args.extend(ssl.iter().map(String::as_str));
    let src = Server::start("tls-src", &args);
    let dst = Server::target("tls-dst");
    src.sql("CREATE USER 'tls'@'%' REQUIRE SSL; GRANT ALL ON *.* TO 'tls'@'%'; CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1);");
    let good = format!(
        "mysql://tls@127.0.0.1:{}?ssl-mode=verify-identity&ssl-ca={}",
        src.port,
        d.join("ca.pem").display()
    );
    let out = migrate(
        &good,
        &dst.url(),
        &d.join("s.sqlite"),
        &["snapshot", "--databases", "shop"],
    );
    assert_ok(&out);
    let out = migrate(
        &good,
        &dst.url(),
        &d.join("s.sqlite"),
        &["check", "--databases", "shop"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TLS with"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bad = format!(
        "mysql://tls@127.0.0.1:{}?ssl-mode=verify-ca&ssl-ca={}",
        src.port,
        d.join("other.pem").display()
    );
    let out = migrate(
        &bad,
        &dst.url(),
        &d.join("s2.sqlite"),
        &["snapshot", "--databases", "shop"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("TLS") || stderr(&out).contains("certificate"),
        "{}",
        stderr(&out)
    );
    // the account requires SSL: without TLS it is refused
    let plain = format!("mysql://tls@127.0.0.1:{}?ssl-mode=disabled", src.port);
    let out = migrate(
        &plain,
        &dst.url(),
        &d.join("s3.sqlite"),
        &["snapshot", "--databases", "shop"],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// Servers that fold table names differently (`lower_case_table_names` 1 on one side, 0 on the
/// other) are refused by `check` (a blocker), `snapshot` and `follow` (exit 2, one line naming
/// the variable and the fix), before anything is written: a folding source's statements name
/// `Shop.Orders` for a table a case-sensitive target knows only as `shop.orders`, and a
/// folding target would merge a case-sensitive source's `T` and `t`. Both folding is
/// supported (`ddl::names_folded_on_both_servers`).
#[test]
fn servers_that_fold_table_names_differently_are_refused() {
    let mut args: Vec<&str> = SOURCE_ARGS.to_vec();
    args.push("--lower-case-table-names=1");
    let folding_src = Server::start("lc-src", &args);
    let src = Server::source("lc-src0");
    let folding_dst = Server::start(
        "lc-dst",
        &["--log-bin=mysql-bin", "--lower-case-table-names=1"],
    );
    let dst = Server::target("lc-dst0");
    for s in [&folding_src, &src] {
        s.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v INT); INSERT INTO shop.t VALUES (1, 1)");
    }
    let dir = tempdir();
    for (source, target, side, pair) in [
        (
            &folding_src,
            &dst,
            "source",
            "1 on the source and 0 on the target",
        ),
        (
            &src,
            &folding_dst,
            "target",
            "0 on the source and 1 on the target",
        ),
    ] {
        let pair = format!("lower_case_table_names is {pair}");
        let state = dir.path().join(format!("{side}.sqlite"));
        let out = migrate(
            &source.url(),
            &target.url(),
            &state,
            &["check", "--databases", "shop"],
        );
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_ne!(code(&out), 0, "check passed a folding {side}: {text}");
        assert!(text.contains(&pair), "{text}");
        let out = migrate(
            &source.url(),
            &target.url(),
            &state,
            &["snapshot", "--databases", "shop"],
        );
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{err}");
        assert!(err.contains(&pair) && err.contains("fix:"), "{err}");
        assert!(
            target.sql("SHOW DATABASES LIKE 'shop'").trim().is_empty(),
            "snapshot wrote to the target"
        );
    }
    // follow refuses too (a folding source after a snapshot from a case-sensitive one is the
    // same server restarted with the setting changed)
    let state = dir.path().join("f.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "shop"],
    ));
    let out = migrate(
        &src.url(),
        &folding_dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("lower_case_table_names is 0 on the source and 1 on the target"),
        "{err}"
    );
}

/// A migrated table whose foreign key references a table that is not migrated (`--exclude`,
/// or another database) is copied, but after cutover inserts into it fail: check names it.
#[test]
fn a_parent_table_left_out_is_reported_by_check() {
    let src = Server::source("fkp-src");
    let dst = Server::target("fkp-dst");
    src.sql(
        "CREATE DATABASE shop; CREATE DATABASE crm; \
         CREATE TABLE crm.customers (id INT PRIMARY KEY); \
         CREATE TABLE shop.products (id INT PRIMARY KEY); \
         CREATE TABLE shop.orders (id INT PRIMARY KEY, customer INT, product INT, \
           CONSTRAINT fk_customer FOREIGN KEY (customer) REFERENCES crm.customers (id), \
           CONSTRAINT fk_product FOREIGN KEY (product) REFERENCES products (id))",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let check = |args: &[&str]| {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        let out = migrate(&src.url(), &dst.url(), &state, &all);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out))
    };
    let text = check(&["--databases", "shop,crm"]);
    assert!(
        text.contains("2 databases") && !text.contains("is not migrated"),
        "{text}"
    );
    let text = check(&["--databases", "shop"]);
    assert!(
        text.contains("`fk_customer` references crm.customers, which is not migrated"),
        "{text}"
    );
    assert!(!text.contains("fk_product"), "{text}");
    let text = check(&["--databases", "shop", "--exclude", "shop.products"]);
    assert!(
        text.contains("`fk_product` references shop.products, which is not migrated"),
        "{text}"
    );
}

/// A table with a WITHOUT OVERLAPS key (application-time periods) cannot be written with
/// REPLACE (MariaDB error 1235), which migrate's writers need: check and snapshot refuse it
/// by name with the fix, `--exclude` lets the rest through, and one created while follow runs
/// stops follow with the same fix.
#[test]
fn tables_with_a_without_overlaps_key_are_refused() {
    let src = Server::source("wo-src");
    let dst = Server::target("wo-dst");
    let period_table = |name: &str| {
        format!(
            "CREATE TABLE shop.{name} (id INT NOT NULL, s DATE NOT NULL, e DATE NOT NULL, price INT, \
             PERIOD FOR valid(s, e), UNIQUE KEY (id, valid WITHOUT OVERLAPS)); \
             INSERT INTO shop.{name} VALUES (1, '2020-01-01', '2021-01-01', 10)"
        )
    };
    src.sql(&format!(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1); \
         CREATE TABLE shop.terms (id INT NOT NULL, s DATE NOT NULL, e DATE NOT NULL, v INT, \
           PERIOD FOR valid(s, e), PRIMARY KEY (id, s)); \
         INSERT INTO shop.terms VALUES (1, '2020-01-01', '2030-01-01', 1); {}",
        period_table("prices")
    ));
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["check", "--databases", "shop"],
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(code(&out), 1, "{text}");
    assert!(
        text.contains("shop.prices") && text.contains("WITHOUT OVERLAPS key"),
        "{text}"
    );
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "shop"],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("shop.prices has a WITHOUT OVERLAPS key")
            && stderr(&out).contains("--exclude 'shop.prices'"),
        "{}",
        stderr(&out)
    );
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &[
            "snapshot",
            "--databases",
            "shop",
            "--exclude",
            "shop.prices",
        ],
    ));
    // periods without such a key are copied and followed (FOR PORTION OF splits rows)
    src.sql(
        "DELETE FROM shop.terms FOR PORTION OF valid FROM '2021-01-01' TO '2022-01-01'; \
         UPDATE shop.terms FOR PORTION OF valid FROM '2025-01-01' TO '2026-01-01' SET v = 2",
    );
    follow_caught_up(&src.url(), &dst.url(), &state, "shop");
    let terms = |s: &Server| s.sql("SELECT * FROM shop.terms ORDER BY s");
    assert_eq!(terms(&src), terms(&dst));
    assert_eq!(terms(&dst).lines().count(), 4);
    src.sql(&period_table("discounts"));
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up", "--databases", "shop"],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("WITHOUT OVERLAPS") && stderr(&out).contains("--exclude it"),
        "{}",
        stderr(&out)
    );
}

/// After cutover the application runs with the target's global settings: check names each
/// that differs from the source's (sql_mode, time_zone, div_precision_increment,
/// event_scheduler here), with the SET GLOBAL that matches them; once set, they are quiet.
#[test]
fn settings_the_application_runs_with_are_compared_by_check() {
    let src = Server::source("set-src");
    let dst = Server::target("set-dst");
    src.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); \
         SET GLOBAL div_precision_increment = 8; SET GLOBAL event_scheduler = ON",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let check = || {
        let out = migrate(
            &src.url(),
            &dst.url(),
            &state,
            &["check", "--databases", "shop"],
        );
        format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out))
    };
    let text = check();
    for expected in [
        "sql_mode",
        "SET GLOBAL sql_mode = '';",
        "SET GLOBAL time_zone = '+09:00';",
        "is '4' on the target and '8' on the source",
        "SET GLOBAL div_precision_increment = 8;",
        "SET GLOBAL event_scheduler = 'ON';",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    dst.sql(
        "SET GLOBAL sql_mode = ''; SET GLOBAL time_zone = '+09:00'; \
         SET GLOBAL div_precision_increment = 8; SET GLOBAL event_scheduler = 'ON'",
    );
    let text = check();
    for quiet in [
        "sql_mode",
        "time_zone",
        "div_precision_increment",
        "event_scheduler",
    ] {
        assert!(!text.contains(&format!(" {quiet} ")), "{quiet}: {text}");
    }
}
