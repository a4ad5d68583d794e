//! The seccomp profile of a sandbox: an allowlist.
//!
//! Anchored on Docker's default profile (moby's
//! `profiles/seccomp/default.json`) with its conditions resolved for the
//! capabilities a sandbox keeps (`spec::CAPS`: no `CAP_SYS_ADMIN`,
//! `CAP_SYS_PTRACE`, `CAP_SYS_MODULE`, `CAP_SYS_TIME`, ...; but
//! `CAP_SYS_CHROOT`), and tightened: `io_uring_*` and `name_to_handle_at`,
//! which Docker's allowed for years, are left out. A system call named
//! nowhere below fails with `EPERM` (the default action), including those
//! newer than the profile or than the libseccomp that compiles it; `clone3`
//! fails with `ENOSYS`, so that glibc (2.34 and later) falls back to
//! `clone`, whose flags the filter can see: `clone` is allowed only without
//! a namespace flag. (A filter cannot read `clone3`'s flags, which are in
//! memory.)
//!
//! Names the running libseccomp does not know are skipped by the OCI
//! runtime, so the lists may name system calls newer than the host's.

use serde_json::{json, Value};

/// `EPERM`: what any system call not allowed below returns.
const EPERM: u32 = 1;
/// `ENOSYS`: what `clone3` returns ("not implemented": callers fall back).
const ENOSYS: u32 = 38;

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`: no `clone` may carry any.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x0002_0000 // CLONE_NEWNS
    | 0x0200_0000 // CLONE_NEWCGROUP
    | 0x0400_0000 // CLONE_NEWUTS
    | 0x0800_0000 // CLONE_NEWIPC
    | 0x1000_0000 // CLONE_NEWUSER
    | 0x2000_0000 // CLONE_NEWPID
    | 0x4000_0000; // CLONE_NEWNET

/// `AF_VSOCK`: sockets to the hypervisor or its guests are refused.
const AF_VSOCK: u64 = 40;

/// `personality(2)` arguments allowed, as Docker does: `PER_LINUX`,
/// `PER_LINUX32`, `UNAME26`, `PER_LINUX32 | UNAME26`, and the query
/// `0xffffffff`.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// System calls allowed whatever their arguments, by what they are for.
/// (The 32-bit names, `*32`, `*64` and `*_time64`, serve x86 programs.)
pub const ALLOWED: &[(&str, &[&str])] = &[
    (
        "files, directories and descriptors",
        &[
            "access",
            "chdir",
            "chmod",
            "chown",
            "chown32",
            "close",
            "close_range",
            "copy_file_range",
            "creat",
            "dup",
            "dup2",
            "dup3",
            "faccessat",
            "faccessat2",
            "fadvise64",
            "fadvise64_64",
            "fallocate",
            "fchdir",
            "fchmod",
            "fchmodat",
            "fchmodat2",
            "fchown",
            "fchown32",
            "fchownat",
            "fcntl",
            "fcntl64",
            "fdatasync",
            "flock",
            "fstat",
            "fstat64",
            "fstatat64",
            "fstatfs",
            "fstatfs64",
            "fsync",
            "ftruncate",
            "ftruncate64",
            "futimesat",
            "getcwd",
            "getdents",
            "getdents64",
            "lchown",
            "lchown32",
            "link",
            "linkat",
            "_llseek",
            "lseek",
            "lstat",
            "lstat64",
            "mkdir",
            "mkdirat",
            "mknod",
            "mknodat",
            "newfstatat",
            "open",
            "openat",
            "openat2",
            "pipe",
            "pipe2",
            "pread64",
            "preadv",
            "preadv2",
            "pwrite64",
            "pwritev",
            "pwritev2",
            "read",
            "readahead",
            "readlink",
            "readlinkat",
            "readv",
            "rename",
            "renameat",
            "renameat2",
            "rmdir",
            "sendfile",
            "sendfile64",
            "splice",
            "stat",
            "stat64",
            "statfs",
            "statfs64",
            "statx",
            "symlink",
            "symlinkat",
            "sync",
            "sync_file_range",
            "syncfs",
            "tee",
            "truncate",
            "truncate64",
            "umask",
            "unlink",
            "unlinkat",
            "utime",
            "utimensat",
            "utimensat_time64",
            "utimes",
            "vmsplice",
            "write",
            "writev",
            // The sandbox keeps CAP_SYS_CHROOT.
            "chroot",
        ],
    ),
    (
        "extended attributes",
        &[
            "fgetxattr",
            "flistxattr",
            "fremovexattr",
            "fsetxattr",
            "getxattr",
            "lgetxattr",
            "listxattr",
            "llistxattr",
            "lremovexattr",
            "lsetxattr",
            "removexattr",
            "setxattr",
        ],
    ),
    (
        "waiting for events, and asynchronous I/O (the old `io_*` kind, \
         not io_uring)",
        &[
            "epoll_create",
            "epoll_create1",
            "epoll_ctl",
            "epoll_ctl_old",
            "epoll_pwait",
            "epoll_pwait2",
            "epoll_wait",
            "epoll_wait_old",
            "eventfd",
            "eventfd2",
            "fanotify_mark",
            "inotify_add_watch",
            "inotify_init",
            "inotify_init1",
            "inotify_rm_watch",
            "io_cancel",
            "io_destroy",
            "io_getevents",
            "io_pgetevents",
            "io_pgetevents_time64",
            "io_setup",
            "io_submit",
            "ioctl",
            "_newselect",
            "poll",
            "ppoll",
            "ppoll_time64",
            "pselect6",
            "pselect6_time64",
            "select",
        ],
    ),
    (
        "sockets (`socket` itself below, without AF_VSOCK)",
        &[
            "accept",
            "accept4",
            "bind",
            "connect",
            "getpeername",
            "getsockname",
            "getsockopt",
            "listen",
            "recv",
            "recvfrom",
            "recvmmsg",
            "recvmmsg_time64",
            "recvmsg",
            "send",
            "sendmmsg",
            "sendmsg",
            "sendto",
            "setsockopt",
            "shutdown",
            "socketcall",
            "socketpair",
        ],
    ),
    (
        "memory",
        &[
            "brk",
            "madvise",
            "membarrier",
            "memfd_create",
            "memfd_secret",
            "mincore",
            "mlock",
            "mlock2",
            "mlockall",
            "mmap",
            "mmap2",
            "mprotect",
            "mremap",
            "msync",
            "munlock",
            "munlockall",
            "munmap",
            "pkey_alloc",
            "pkey_free",
            "pkey_mprotect",
            "remap_file_pages",
            // Newer than Docker's list (Linux 6.5 and 6.6).
            "cachestat",
            "map_shadow_stack",
        ],
    ),
    (
        "processes and threads (`clone` below, without namespace flags)",
        &[
            "arch_prctl",
            "capget",
            "capset",
            "execve",
            "execveat",
            "exit",
            "exit_group",
            "fork",
            "get_robust_list",
            "get_thread_area",
            "getcpu",
            "getpgid",
            "getpgrp",
            "getpid",
            "getppid",
            "getpriority",
            "getrlimit",
            "getrusage",
            "getsid",
            "gettid",
            "ioprio_get",
            "ioprio_set",
            "kill",
            "modify_ldt",
            "pidfd_open",
            "pidfd_send_signal",
            "prctl",
            "prlimit64",
            "process_mrelease",
            "restart_syscall",
            "rseq",
            "sched_get_priority_max",
            "sched_get_priority_min",
            "sched_getaffinity",
            "sched_getattr",
            "sched_getparam",
            "sched_getscheduler",
            "sched_rr_get_interval",
            "sched_rr_get_interval_time64",
            "sched_setaffinity",
            "sched_setattr",
            "sched_setparam",
            "sched_setscheduler",
            "sched_yield",
            "set_robust_list",
            "set_thread_area",
            "set_tid_address",
            "setpgid",
            "setpriority",
            "setrlimit",
            "setsid",
            "sysinfo",
            "tgkill",
            "times",
            "tkill",
            "ugetrlimit",
            "uname",
            "vfork",
            "wait4",
            "waitid",
            "waitpid",
            // Further filters and sandboxes only take rights away.
            "seccomp",
            "landlock_add_rule",
            "landlock_create_ruleset",
            "landlock_restrict_self",
            // Docker allows these on Linux 4.8 and later (where ptrace can
            // no longer be used to skip seccomp); they reach only the
            // sandbox's own processes (its PID namespace).
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
        ],
    ),
    (
        "users and groups (changed only within what CAP_SETUID and \
         CAP_SETGID allow)",
        &[
            "getegid",
            "getegid32",
            "geteuid",
            "geteuid32",
            "getgid",
            "getgid32",
            "getgroups",
            "getgroups32",
            "getresgid",
            "getresgid32",
            "getresuid",
            "getresuid32",
            "getuid",
            "getuid32",
            "setfsgid",
            "setfsgid32",
            "setfsuid",
            "setfsuid32",
            "setgid",
            "setgid32",
            "setgroups",
            "setgroups32",
            "setregid",
            "setregid32",
            "setresgid",
            "setresgid32",
            "setresuid",
            "setresuid32",
            "setreuid",
            "setreuid32",
            "setuid",
            "setuid32",
        ],
    ),
    (
        "signals",
        &[
            "alarm",
            "pause",
            "rt_sigaction",
            "rt_sigpending",
            "rt_sigprocmask",
            "rt_sigqueueinfo",
            "rt_sigreturn",
            "rt_sigsuspend",
            "rt_sigtimedwait",
            "rt_sigtimedwait_time64",
            "rt_tgsigqueueinfo",
            "sigaltstack",
            "signalfd",
            "signalfd4",
            "sigprocmask",
            "sigreturn",
        ],
    ),
    (
        "futexes",
        &[
            "futex",
            "futex_time64",
            "futex_waitv",
            // Newer than Docker's list (Linux 6.7).
            "futex_requeue",
            "futex_wait",
            "futex_wake",
        ],
    ),
    (
        "time and timers (setting the clock takes CAP_SYS_TIME, which the \
         sandbox lacks: adjtimex and clock_adjtime only read it)",
        &[
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
            "clock_getres",
            "clock_getres_time64",
            "clock_gettime",
            "clock_gettime64",
            "clock_nanosleep",
            "clock_nanosleep_time64",
            "getitimer",
            "gettimeofday",
            "nanosleep",
            "setitimer",
            "time",
            "timer_create",
            "timer_delete",
            "timer_getoverrun",
            "timer_gettime",
            "timer_gettime64",
            "timer_settime",
            "timer_settime64",
            "timerfd_create",
            "timerfd_gettime",
            "timerfd_gettime64",
            "timerfd_settime",
            "timerfd_settime64",
        ],
    ),
    (
        "System V and POSIX IPC (in the sandbox's own IPC namespace)",
        &[
            "ipc",
            "mq_getsetattr",
            "mq_notify",
            "mq_open",
            "mq_timedreceive",
            "mq_timedreceive_time64",
            "mq_timedsend",
            "mq_timedsend_time64",
            "mq_unlink",
            "msgctl",
            "msgget",
            "msgrcv",
            "msgsnd",
            "semctl",
            "semget",
            "semop",
            "semtimedop",
            "semtimedop_time64",
            "shmat",
            "shmctl",
            "shmdt",
            "shmget",
        ],
    ),
    ("randomness", &["getrandom"]),
];

/// System calls the profile refuses on purpose (none is in [`ALLOWED`]; the
/// default action refuses them, as it does every call not allowed). Listed
/// for the record and for the tests, not as rules (libseccomp takes no rule
/// whose action is the default one); `clone3` is answered apart.
#[cfg_attr(not(test), allow(dead_code))]
pub const REFUSED: &[&str] = &[
    // New namespaces and mounts: the way to full capabilities in a user
    // namespace of one's own, and from there to nf_tables and the like.
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "listmount",
    "statmount",
    // Kernel attack surface with a long record of exploits.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "bpf",
    "perf_event_open",
    "fanotify_init",
    // Keyrings (not namespaced).
    "keyctl",
    "add_key",
    "request_key",
    // File handles bypass the mount a path is in.
    "open_by_handle_at",
    "name_to_handle_at",
    // The host's kernel and machine.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "iopl",
    "ioperm",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "sethostname",
    "setdomainname",
    "vhangup",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "vm86",
    "vm86old",
    // What Docker allows only with CAP_SYS_PTRACE or CAP_SYS_NICE.
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "get_mempolicy",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "mbind",
    "migrate_pages",
    "move_pages",
];

/// The profile, in the OCI spec's `linux.seccomp` form.
pub fn profile() -> Value {
    let allowed: Vec<&str> = ALLOWED
        .iter()
        .flat_map(|(_, names)| names.iter().copied())
        .collect();
    let mut rules = vec![
        json!({"names": allowed, "action": "SCMP_ACT_ALLOW"}),
        // `clone` without a namespace flag: (flags & mask) == 0.
        json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                         "op": "SCMP_CMP_MASKED_EQ"}]}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
        json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]}),
    ];
    // One rule per value: the conditions of one rule must all hold.
    for p in PERSONALITIES {
        rules.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}]}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<Value> {
        profile()["syscalls"].as_array().unwrap().clone()
    }

    /// Names in rules with `action`.
    fn named(action: &str) -> Vec<String> {
        rules()
            .iter()
            .filter(|r| r["action"] == action)
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn refuses_by_default() {
        let p = profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        assert_eq!(
            p["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        // Only ALLOW and ERRNO rules: nothing is traced, logged or killed.
        for r in rules() {
            assert!(
                r["action"] == "SCMP_ACT_ALLOW" || r["action"] == "SCMP_ACT_ERRNO",
                "{r}"
            );
        }
        // It parses as an OCI seccomp profile.
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
    }

    #[test]
    fn clone3_is_enosys_and_clone_has_no_namespace_flags() {
        let clone3: Vec<Value> = rules()
            .into_iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == "clone3"))
            .collect();
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], 38);
        let clone: Vec<Value> = rules()
            .into_iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == "clone"))
            .collect();
        assert_eq!(clone.len(), 1, "clone is allowed by one rule only");
        let c = &clone[0];
        assert_eq!(c["names"], json!(["clone"]), "its own rule, with the args");
        assert_eq!(
            c["args"],
            json!([{"index": 0, "value": 0x7E02_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
        );
    }

    #[test]
    fn dangerous_calls_are_not_allowed() {
        let allowed = named("SCMP_ACT_ALLOW");
        for r in REFUSED.iter().chain(&["clone3"]) {
            assert!(!allowed.iter().any(|a| a == r), "{r} is allowed");
        }
        for r in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "userfaultfd",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "open_by_handle_at",
            "name_to_handle_at",
            "init_module",
            "finit_module",
            "delete_module",
        ] {
            assert!(REFUSED.contains(&r), "{r} is not listed as refused");
        }
        // What programs need stays allowed.
        for need in [
            "fallocate",
            "pipe2",
            "sendmsg",
            "recvmsg",
            "pidfd_open",
            "memfd_create",
            "faccessat2",
            "close_range",
            "rseq",
            "statx",
            "epoll_pwait2",
            "execve",
            "wait4",
            "futex",
            "openat",
            "getrandom",
        ] {
            assert!(allowed.iter().any(|a| a == need), "{need} is not allowed");
        }
        let listed: Vec<&str> = ALLOWED
            .iter()
            .flat_map(|(_, n)| n.iter().copied())
            .collect();
        let mut sorted = listed.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), listed.len(), "a name is listed twice");
    }
}
