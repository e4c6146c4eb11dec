//! The reference registry as a black box: hostile bodies and credentials get a clear
//! refusal and change nothing. (Also: this test target makes `cargo test --workspace`
//! build `kasip-registry`, which the agent's sync tests drive.)

use kasip_tests::{run, text, Server, TempDataDir};

const REGISTRY: &str = env!("CARGO_BIN_EXE_kasip-registry");
const BIN: &str = "090640001233";

fn registry() -> (TempDataDir, Server) {
    let dir = TempDataDir::new();
    for args in [
        vec!["init"],
        vec!["add-college", "--bin", BIN, "--name", "Test college"],
    ] {
        let output = run(REGISTRY, &dir.path(), &args);
        assert!(output.status.success(), "{:?}", text(&output));
    }
    let server = Server::start(REGISTRY, &dir.path(), &[]);
    (dir, server)
}

fn post(url: &str, body: &str) -> (u16, String) {
    let response = kasip_tests::http_client()
        .post(url)
        .body(body.to_owned())
        .send()
        .expect("post");
    (response.status().as_u16(), response.text().expect("body"))
}

#[test]
fn hostile_batches_enrolments_and_credentials_are_refused_and_change_nothing() {
    let (dir, server) = registry();
    let batches = format!("{}/v1/batches", server.url);
    for (body, status, says) in [
        ("", 400, "not a compact JWS"),
        ("not.a.jws.at.all", 400, "not a compact JWS"),
        ("eyJhbGciOiJFZDI1NTE5In0.e30.AA", 400, "kid"),
        (
            "eyJhbGciOiJFZDI1NTE5Iiwia2lkIjoibm9ib2R5In0.e30.AA",
            401,
            "no agent",
        ),
        ("\u{0}\u{1}binary", 400, ""),
    ] {
        let (got, text) = post(&batches, body);
        assert_eq!(got, status, "{body:?}: {text}");
        assert!(text.contains(says), "{body:?}: {text}");
    }
    let enrolments = format!("{}/v1/enrolments", server.url);
    for (body, status) in [
        ("{", 400),
        ("[]", 400),
        (r#"{"code":"X","college_bin":"090640001233"}"#, 400),
        (
            r#"{"code":"WRONG","college_bin":"090640001233","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
            403,
        ),
        (
            r#"{"code":"X","college_bin":"090640001233","public_key":"short"}"#,
            400,
        ),
    ] {
        let (got, text) = post(&enrolments, body);
        assert_eq!(got, status, "{body}: {text}");
    }
    // Reads that need an agent's signature refuse anonymous and forged callers.
    for path in [
        format!("/v1/colleges/{BIN}/beneficiaries"),
        "/v1/agents/x/checkpoint".to_owned(),
    ] {
        let client = kasip_tests::http_client();
        for authorization in ["", "Bearer x", "KasipAgent a.b.c"] {
            let response = client
                .get(format!("{}{path}", server.url))
                .header("authorization", authorization)
                .send()
                .expect("get");
            assert_eq!(response.status().as_u16(), 401, "{path} {authorization:?}");
        }
    }
    drop(server);
    let db = rusqlite::Connection::open(dir.path().join("registry.db")).expect("db");
    for table in ["agents", "batches", "records", "quarantine"] {
        let rows: i64 = db
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .expect("count");
        assert_eq!(rows, 0, "{table}");
    }
}

#[test]
fn cli_refuses_bad_input_with_the_reason() {
    let dir = TempDataDir::new();
    let refused = |args: &[&str], says: &str| {
        let output = run(REGISTRY, &dir.path(), args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            text(&output).1.contains(says),
            "{args:?}: {:?}",
            text(&output)
        );
    };
    refused(
        &["add-college", "--bin", "090640001234", "--name", "X"],
        "--bin",
    );
    refused(&["issue-enrolment-code", "--bin", BIN], "not registered");
    refused(&["serve", "--fail-rate", "1.5"], "between 0.0 and 1.0");
    let output = run(
        REGISTRY,
        &dir.path(),
        &["add-college", "--bin", BIN, "--name", "X"],
    );
    assert!(output.status.success());
    let csv = dir.file("list.csv");
    std::fs::write(
        &csv,
        "iin;beneficiary;voucher\n060315500016;да;active\n060315500017;да;\n",
    )
    .expect("csv");
    refused(
        &[
            "import-beneficiaries",
            "--bin",
            BIN,
            csv.to_str().expect("path"),
        ],
        "row 3, column iin",
    );
}
