//! Conversions between the native API's wire types (`paddock_wire`) and
//! the engine's: requests into the engine, answers out of it. The only
//! place the two meet; a field the engine gains reaches the API when it is
//! mapped here.

use paddock_core::model as core;
use paddock_wire as wire;

/// An engine value as the API answers it.
pub trait ToWire {
    type Wire;
    fn wire(self) -> Self::Wire;
}

/// A request body as the engine takes it.
pub trait ToEngine {
    type Engine;
    fn engine(self) -> Self::Engine;
}

impl<T: ToWire> ToWire for Vec<T> {
    type Wire = Vec<T::Wire>;
    fn wire(self) -> Self::Wire {
        self.into_iter().map(ToWire::wire).collect()
    }
}

impl<T: ToWire> ToWire for Option<T> {
    type Wire = Option<T::Wire>;
    fn wire(self) -> Self::Wire {
        self.map(ToWire::wire)
    }
}

impl<T: ToEngine> ToEngine for Vec<T> {
    type Engine = Vec<T::Engine>;
    fn engine(self) -> Self::Engine {
        self.into_iter().map(ToEngine::engine).collect()
    }
}

impl<T: ToEngine> ToEngine for Option<T> {
    type Engine = Option<T::Engine>;
    fn engine(self) -> Self::Engine {
        self.map(ToEngine::engine)
    }
}

/// Enums of the same variants, both ways.
macro_rules! same_enum {
    ($core:ty, $wire:ty, [$($v:ident),+]) => {
        impl ToWire for $core {
            type Wire = $wire;
            fn wire(self) -> $wire {
                match self { $(<$core>::$v => <$wire>::$v),+ }
            }
        }
        impl ToEngine for $wire {
            type Engine = $core;
            fn engine(self) -> $core {
                match self { $(<$wire>::$v => <$core>::$v),+ }
            }
        }
    };
}

same_enum!(
    core::Isolation,
    wire::Isolation,
    [Container, Gvisor, Microvm]
);
same_enum!(
    core::State,
    wire::State,
    [Creating, Running, Paused, Stopped, Error, Destroyed]
);
same_enum!(core::Access, wire::Access, [Rw, Ro, Deny]);
same_enum!(
    core::IdleAction,
    wire::IdleAction,
    [Destroy, Hibernate, Suspend]
);
same_enum!(core::RestartPolicy, wire::RestartPolicy, [Never, Always]);
same_enum!(core::EgressAccess, wire::EgressAccess, [Allow, Deny]);

/// Structs of the same fields, engine to wire only (answers).
macro_rules! answer {
    ($core:path => $wire:ident, [$($plain:ident),*], [$($mapped:ident),*]) => {
        impl ToWire for $core {
            type Wire = wire::$wire;
            fn wire(self) -> wire::$wire {
                wire::$wire { $($plain: self.$plain,)* $($mapped: self.$mapped.wire(),)* }
            }
        }
    };
}

/// Structs of the same fields, both ways: `plain` fields are the same type
/// on both sides, `mapped` ones convert.
macro_rules! same_struct {
    ($core:ident, [$($plain:ident),*], [$($mapped:ident),*]) => {
        answer!(core::$core => $core, [$($plain),*], [$($mapped),*]);
        impl ToEngine for wire::$core {
            type Engine = core::$core;
            fn engine(self) -> core::$core {
                core::$core { $($plain: self.$plain,)* $($mapped: self.$mapped.engine(),)* }
            }
        }
    };
}

same_struct!(AclRule, [path], [access]);
same_struct!(Mount, [path, origin], [acls]);
same_struct!(EgressOverride, [host, prefix_path, query, headers], []);
same_struct!(
    EgressRule,
    [host, ports, methods, paths],
    [access, override_]
);
same_struct!(SnapshotPolicy, [restore_key, write_key, include], []);
same_struct!(PtySize, [rows, cols], []);
same_struct!(
    SandboxSpec,
    [
        key,
        labels,
        image,
        template,
        cpu,
        memory_mb,
        disk_mb,
        pids,
        env,
        entrypoint,
        command,
        cwd,
        ttl_secs,
        idle_timeout_secs,
        ports,
        extra_hosts,
        tty,
        usage_events_secs,
        from_snapshot,
        cpu_request,
        memory_request_mb,
        bootstrap,
        wake_on_request,
        network
    ],
    [isolation, mounts, egress, snapshot, volumes, on_idle, restart]
);
same_struct!(VolumeRequest, [name, path, read_only], []);
answer!(core::VolumeMount => VolumeMount, [volume, name, path, read_only], []);
answer!(core::VolumeHolder => VolumeHolder, [sandbox_id, path, read_only], []);
same_struct!(SnapshotRequest, [name, labels, memory], []);
same_struct!(
    ExecRequest,
    [cmd, shell, env, cwd, user, stdin, timeout, max_output_bytes],
    [pty]
);

answer!(core::ResolvedImage => ResolvedImage,
    [digest, layers, env, entrypoint, cmd, working_dir, user, exposed_ports, size], []);
answer!(core::SandboxConfig => SandboxConfig,
    [image, cpu, memory_mb, disk_mb, pids, env, entrypoint, command, cwd, ttl_secs,
     idle_timeout_secs, ports, user, extra_hosts, tty, usage_events_secs, from_snapshot, layers,
     cpu_request, memory_request_mb, bootstrap, wake_on_request, network],
    [isolation, resolved_image, mounts, egress, snapshot, volumes, on_idle, restart]);
answer!(core::Network => Network,
    [id, owner, name, subnet, status, is_default, created_at], []);
answer!(core::Snapshot => Snapshot,
    [id, owner, name, sandbox_id, labels, digest, size_bytes, created_at], [config]);
answer!(core::Sandbox => Sandbox,
    [id, owner, key, labels, template, backend, message, created_at, updated_at,
     last_active_at, expires_at, ip],
    [config, state]);
answer!(core::Template => Template, [name, owner, description, warm_pool, created_at], [defaults]);
answer!(core::ExecResult => ExecResult,
    [exit_code, signal, timed_out, stdout, stderr, stdout_truncated, stderr_truncated,
     duration_ms], []);
answer!(core::FileInfo => FileInfo,
    [name, path, kind, size, mode, modified_at, symlink_target], []);
answer!(core::Port => Port, [port, address, protocol, declared, listening], []);
answer!(core::Platform => Platform, [system, node, release, version, machine], []);
answer!(core::Metrics => Metrics,
    [memory_bytes, memory_limit_bytes, memory_percent, cpu_percent, cpu_usage_ns, pids,
     pids_limit, net_rx_bytes, net_tx_bytes, block_read_bytes, block_write_bytes,
     disk_bytes, disk_limit_bytes], []);
answer!(core::ImageInfo => ImageInfo,
    [reference, resolved, digest, layers, size, exposed_ports], []);
answer!(core::PullProgress => PullProgress, [reference, status, layer, current, total], []);
answer!(paddock_core::engine::PoolStatus => PoolStatus, [image, template, size, ready], []);
answer!(paddock_core::Capabilities => Capabilities,
    [pause, fs_snapshot, memory_snapshot, fork, shares_host_kernel, fd_handover], []);
answer!(paddock_core::BackendInfo => BackendInfo, [name, default], [isolation, capabilities]);

impl ToWire for core::Event {
    type Wire = wire::Event;
    /// The payload as the engine serialises it (`paddock_core::event`: the
    /// one place an event's JSON is written).
    fn wire(self) -> wire::Event {
        wire::Event {
            seq: self.seq,
            id: self.id,
            sandbox_id: self.sandbox_id,
            kind: self.kind,
            time: self.time,
            data: serde_json::to_value(&self.data).unwrap_or_default(),
        }
    }
}

/// A policy as the API answers it, with where it comes from.
pub fn policy(
    x: paddock_core::policy::Policy,
    source: Option<paddock_core::policy::PolicySource>,
) -> wire::Policy {
    wire::Policy {
        name: x.name,
        principals: x.principals,
        groups: x.groups,
        templates: x.templates,
        max_sandboxes: x.max_sandboxes,
        max_ttl_secs: x.max_ttl_secs,
        max_cpu: x.max_cpu,
        max_memory_mb: x.max_memory_mb,
        max_disk_mb: x.max_disk_mb,
        source: source.map(|s| match s {
            paddock_core::policy::PolicySource::Config => "config".into(),
            paddock_core::policy::PolicySource::Api => "api".into(),
        }),
    }
}

/// A policy as the engine takes it (`source` is the daemon's to say).
pub fn policy_engine(x: wire::Policy) -> paddock_core::policy::Policy {
    paddock_core::policy::Policy {
        name: x.name,
        principals: x.principals,
        groups: x.groups,
        templates: x.templates,
        max_sandboxes: x.max_sandboxes,
        max_ttl_secs: x.max_ttl_secs,
        max_cpu: x.max_cpu,
        max_memory_mb: x.max_memory_mb,
        max_disk_mb: x.max_disk_mb,
    }
}

pub fn audit(a: paddock_core::audit::AuditRecord) -> wire::AuditRecord {
    wire::AuditRecord {
        seq: a.seq,
        at: a.at,
        principal: a.principal,
        email: a.email,
        via: a.via,
        action: a.action,
        sandbox: a.sandbox,
        outcome: a.outcome,
        error: a.error,
        detail: a.detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A sandbox with every field set, as the engine stores it.
    fn full_sandbox() -> serde_json::Value {
        let mount = json!({"path": "/data", "origin": "/srv/data",
            "acls": [{"path": "/data/**", "access": "ro"}]});
        let egress = json!([{"access": "allow", "host": "*.example.com", "ports": [443],
            "methods": ["GET"], "paths": ["/v1/*"],
            "override": {"host": "api.example.com", "prefix_path": "/p",
                "query": {"k": "v"}, "headers": {"x-key": "secret"}}}]);
        json!({
            "id": "7f1c1b8e-8a8b-4c1f-9a51-3c0b8c1f2d3e", "owner": "alice", "key": "k1",
            "labels": {"team": "a"}, "template": "py",
            "config": {
                "image": "alpine:3", "isolation": "container", "cpu": 0.5, "memory_mb": 256,
                "disk_mb": 128, "pids": 64, "env": {"A": "1"}, "entrypoint": ["/bin/sh"],
                "command": ["-c", "sleep 1"], "cwd": "/workspace", "ttl_secs": 60,
                "idle_timeout_secs": 30, "ports": [8080], "user": "1000",
                "resolved_image": {"digest": "sha256:ab", "layers": ["/l/1"], "env": ["P=/bin"],
                    "entrypoint": null, "cmd": ["sh"], "working_dir": "/", "user": null,
                    "exposed_ports": [80], "size": 3},
                "mounts": [mount], "egress": egress,
                "snapshot": {"restore_key": "r", "write_key": "w", "include": ["/data"]},
                "extra_hosts": ["db:10.0.0.2"], "tty": true, "usage_events_secs": 5,
                "from_snapshot": "0d6a1b8e-8a8b-4c1f-9a51-3c0b8c1f2d3e", "layers": ["/s/1"]
            },
            "backend": "crun", "state": "running", "message": "ok",
            "created_at": "2026-12-05T01:02:03Z", "updated_at": "2026-12-05T01:02:04Z",
            "last_active_at": "2026-12-05T01:02:05Z", "expires_at": "2026-12-05T01:03:03Z",
            "ip": "10.88.0.2"
        })
    }

    /// The stored document's names that the API spells otherwise: hiver's
    /// snapshot policy is `snapshot_policy` (`snapshot` names the snapshot
    /// a create starts from).
    fn as_api(mut config: serde_json::Value) -> serde_json::Value {
        let o = config.as_object_mut().unwrap();
        if let Some(p) = o.remove("snapshot") {
            o.insert("snapshot_policy".into(), p);
        }
        config
    }

    /// The native API answers a sandbox as the engine serialises it but
    /// for the names `as_api` changes: a field dropped or renamed in the
    /// mapping fails here.
    #[test]
    fn a_sandbox_answers_as_the_engine_serialises_it() {
        let sb: core::Sandbox = serde_json::from_value(full_sandbox()).unwrap();
        let mut engine = serde_json::to_value(&sb).unwrap();
        assert_eq!(engine, full_sandbox());
        engine["config"] = as_api(engine["config"].clone());
        let answered = serde_json::to_value(sb.wire()).unwrap();
        assert_eq!(answered, engine);
    }

    /// A spec goes into the engine with every field, and a template's
    /// defaults come back out the same.
    #[test]
    fn a_spec_reaches_the_engine_whole() {
        let mut spec = full_sandbox()["config"].clone();
        let o = spec.as_object_mut().unwrap();
        o.remove("resolved_image");
        o.remove("user");
        o.remove("layers");
        o.insert("from_snapshot".into(), json!("snap-1"));
        o.insert("key".into(), json!("k"));
        o.insert("labels".into(), json!({"a": "b"}));
        o.insert("template".into(), json!("t"));
        let mut api = as_api(spec.clone());
        let from = api
            .as_object_mut()
            .unwrap()
            .remove("from_snapshot")
            .unwrap();
        api["snapshot"] = from;
        let wire_spec: wire::SandboxSpec = serde_json::from_value(api.clone()).unwrap();
        assert_eq!(serde_json::to_value(&wire_spec).unwrap(), api);
        let engine = wire_spec.clone().engine();
        assert_eq!(serde_json::to_value(&engine).unwrap(), spec);
        assert_eq!(engine.clone().wire(), wire_spec);
    }

    /// The native API refuses what it does not know, naming it; hiver's
    /// wire types (not these) ignore unknown keys.
    #[test]
    fn requests_refuse_unknown_fields() {
        let e = serde_json::from_value::<wire::SandboxSpec>(json!({"imagee": "x"})).unwrap_err();
        assert!(e.to_string().contains("imagee"), "{e}");
        let e = serde_json::from_value::<wire::SandboxSpec>(
            json!({"egress": [{"access": "allow", "host": "a", "new_field": 1}]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("new_field"), "{e}");
    }

    #[test]
    fn an_event_carries_the_engines_payload() {
        let ev = core::Event {
            seq: 9,
            id: 3,
            sandbox_id: uuid::Uuid::nil(),
            owner: "alice".into(),
            kind: "sandbox.destroyed".into(),
            time: chrono::DateTime::parse_from_rfc3339("2026-12-05T01:02:03Z")
                .unwrap()
                .into(),
            data: paddock_core::event::EventData::destroyed("ttl"),
        };
        let engine = serde_json::to_value(&ev).unwrap();
        let answered = serde_json::to_value(ev.wire()).unwrap();
        assert_eq!(answered, engine);
        assert_eq!(
            answered["data"],
            json!({"state": "destroyed", "reason": "ttl"})
        );
        assert!(answered.get("owner").is_none());
    }

    /// The OpenAPI document is made of the wire types: every reference
    /// resolves, and the schemas are theirs (the engine has none).
    #[test]
    fn the_openapi_document_is_whole() {
        let doc = serde_json::to_value(<crate::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match (k.as_str(), v.as_str()) {
                            ("$ref", Some(r)) => out.push(r.to_string()),
                            _ => refs(v, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 50, "{}", all.len());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(&r);
            assert!(schemas.contains_key(name), "{r} is not in the document");
        }
        let sandbox = &schemas["Sandbox"]["properties"];
        for f in ["id", "backend", "config", "state"] {
            assert!(sandbox.get(f).is_some(), "Sandbox.{f}");
        }
        assert!(doc["paths"]["/v1/version"]["get"].is_object());
    }
}
