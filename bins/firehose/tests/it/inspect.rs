use serde_json::Value;

use crate::firehose;

#[test]
fn generated_file_decodes_completely() {
    let dir = std::env::temp_dir().join(format!("firehose-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gen.jsonl");
    let out = firehose(
        &[
            "generate",
            "-n",
            "5000",
            "--seed",
            "3",
            "-o",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = firehose(&["inspect", "--json", file.to_str().unwrap()], b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["events"], 5000);
    assert_eq!(summary["errors"], 0);
    let tables = summary["tables"].as_object().unwrap();
    let total: u64 = tables.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 5000);
    assert!(tables["likes"].as_u64().unwrap() > tables["posts"].as_u64().unwrap());
    assert!(
        summary["collections"]["app.bsky.feed.like"]
            .as_u64()
            .unwrap()
            > 2000
    );

    // The readable form names the same counts.
    let out = firehose(&["inspect", file.to_str().unwrap()], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("5000 lines: 5000 events decoded, 0 failed"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_lines_are_reported_with_line_numbers_and_exit_1() {
    let good = r#"{"did":"did:plc:a","time_us":5,"kind":"account","account":{"active":true,"did":"did:plc:a","seq":1,"time":"t"}}"#;
    let input = format!("{good}\n{{\"did\":\"x\"\n{good}\n[1,2]\n");
    let out = firehose(&["inspect", "--json", "-"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["events"], 2);
    assert_eq!(summary["errors"], 2);
    assert_eq!(summary["tables"]["account"], 2);
    assert_eq!(summary["first_errors"][0]["line"], 2);
    assert_eq!(summary["first_errors"][1]["line"], 4);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        "firehose: 2 of 4 lines in - failed to decode"
    );
}

#[test]
fn missing_file_and_bad_usage_exit_2() {
    let out = firehose(&["inspect", "/nonexistent/firehose.jsonl"], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("firehose: cannot open /nonexistent/firehose.jsonl"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);

    let out = firehose(&["inspect"], b"");
    assert_eq!(out.status.code(), Some(2));
    let out = firehose(&["generate", "--rate", "0"], b"");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn invalid_utf8_is_an_error_not_a_crash() {
    let mut input = br#"{"did":"did:plc:a","time_us":5,"kind":"identity","identity":{"did":"did:plc:a","seq":1,"time":"t","handle":""#.to_vec();
    input.extend_from_slice(&[0xff, 0xfe]);
    input.extend_from_slice(b"\"}}\n");
    let out = firehose(&["inspect", "--json", "-"], &input);
    assert_eq!(out.status.code(), Some(1));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["errors"], 1);
}
