use super::*;

#[test]
fn names_are_host_labels() {
    assert_eq!(box_name("my-vm").unwrap(), "my-vm");
    assert!(box_name("").unwrap().starts_with("box-"));
    for bad in ["Bad Name!", "-x", "x-", "a.b", "UPPER", &"a".repeat(64)] {
        let e = box_name(bad).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(e.message().starts_with("name:"), "{bad}");
    }
}

#[test]
fn restart_policies_are_two() {
    assert_eq!(
        restart_policy("always", true).unwrap(),
        Some(RestartPolicy::Always)
    );
    assert_eq!(
        restart_policy("never", true).unwrap(),
        Some(RestartPolicy::Never)
    );
    assert_eq!(
        restart_policy("", true).unwrap(),
        Some(RestartPolicy::Always)
    );
    assert_eq!(restart_policy("", false).unwrap(), None);
    let e = restart_policy("sometimes", true).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("restart_policy:"));
}

#[test]
fn deadlines_parse() {
    let mut r = Request::new(());
    assert_eq!(deadline(&r), None);
    r.metadata_mut()
        .insert("grpc-timeout", "30S".parse().unwrap());
    assert_eq!(deadline(&r), Some(Duration::from_secs(30)));
    r.metadata_mut()
        .insert("grpc-timeout", "1500m".parse().unwrap());
    assert_eq!(deadline(&r), Some(Duration::from_millis(1500)));
    r.metadata_mut()
        .insert("grpc-timeout", "x".parse().unwrap());
    assert_eq!(deadline(&r), None);
}

#[test]
fn engine_errors_map_to_the_codes_the_sdk_tells_apart() {
    use tonic::Code;
    for (e, code) in [
        (Error::not_found("box"), Code::NotFound),
        (Error::Exists("x".into()), Code::AlreadyExists),
        (Error::Conflict("x".into()), Code::FailedPrecondition),
        (Error::invalid("key", "bad"), Code::InvalidArgument),
        (Error::Quota("x".into()), Code::ResourceExhausted),
        (Error::PolicyViolation(vec![]), Code::ResourceExhausted),
        (Error::Unauthenticated("x".into()), Code::Unauthenticated),
        (Error::Forbidden("x".into()), Code::PermissionDenied),
        (Error::Internal("x".into()), Code::Internal),
    ] {
        assert_eq!(status(e).code(), code);
    }
    // Fields named as this wire names them.
    let s = st(Error::invalid("memory_mb", "too much"));
    assert!(
        s.message().starts_with("config.memory_bytes:"),
        "{}",
        s.message()
    );
    assert!(st(Error::invalid("key", "x"))
        .message()
        .starts_with("name:"));
}

#[test]
fn the_exchange_reads_an_object_with_a_key() {
    assert_eq!(
        exchange::api_key_of(br#"{"api_key":"pdk_x"}"#).unwrap(),
        "pdk_x"
    );
    for bad in [
        &b"[1,2]"[..],
        b"\"s\"",
        b"null",
        b"42",
        b"{",
        b"{}",
        br#"{"api_key":5}"#,
    ] {
        assert!(
            exchange::api_key_of(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}
