//! The order of the drop, against the recording fake: no root needed.

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use super::fake::{Call, Fake};
use super::{DropError, DropStep, Identity, Ids, Target, drop_with};

fn target(privileged: bool) -> Target {
    Target {
        uid: Uid::from_raw(990),
        gid: Gid::from_raw(991),
        groups: vec![Gid::from_raw(991), Gid::from_raw(5)],
        last_cap: 3,
        privileged,
    }
}

/// A kernel with capabilities 0..=3, all but 2 in the bounding set.
fn kernel() -> Fake {
    Fake::new(3, 0b1011)
}

/// The calls of a complete privileged drop to `target(true)` on `kernel()`.
fn full_privileged_drop() -> Vec<Call> {
    vec![
        Call::CurrentIds,
        Call::ReadBounding(0),
        Call::DropBounding(0),
        Call::ReadBounding(1),
        Call::DropBounding(1),
        Call::ReadBounding(2),
        Call::ReadBounding(3),
        Call::DropBounding(3),
        Call::ClearAmbient,
        Call::SetGroups(2),
        Call::SetResGid(Gid::from_raw(991)),
        Call::SetResUid(Uid::from_raw(990)),
        Call::CapsetEmpty,
        Call::NoNewPrivs,
    ]
}

#[test]
fn a_privileged_drop_makes_its_calls_in_the_documented_order() {
    let mut k = kernel();
    drop_with(&mut k, &target(true)).unwrap();
    assert_eq!(k.calls(), full_privileged_drop());
    assert_eq!(k.bounding(), 0, "the bounding set is empty afterwards");
}

#[test]
fn an_unprivileged_drop_skips_the_bounding_set_and_the_identity_changes() {
    let mut k = kernel();
    drop_with(&mut k, &target(false)).unwrap();
    assert_eq!(
        k.calls(),
        [
            Call::ClearAmbient,
            Call::HoldsCapabilities,
            Call::CapsetEmpty,
            Call::NoNewPrivs
        ]
    );
    assert_eq!(k.groups(), None, "setgroups was not called");
    assert_eq!(k.bounding(), 0b1011, "the bounding set is untouched");
}

#[test]
fn an_unprivileged_drop_without_capabilities_makes_no_capset_call() {
    let mut k = kernel().holding_none();
    drop_with(&mut k, &target(false)).unwrap();
    assert_eq!(
        k.calls(),
        [
            Call::ClearAmbient,
            Call::HoldsCapabilities,
            Call::NoNewPrivs
        ]
    );
    let mut k = kernel()
        .holding_none()
        .fail_on(DropStep::ReadCapabilities, Errno::EFAULT);
    assert_eq!(
        drop_with(&mut k, &target(false)),
        Err(DropError {
            step: DropStep::ReadCapabilities,
            errno: Errno::EFAULT
        })
    );
}

#[test]
fn a_failure_at_any_call_stops_the_drop_there_and_names_its_step() {
    let full = full_privileged_drop();
    for (n, call) in full.iter().enumerate() {
        let mut k = kernel().fail_at(n, Errno::EPERM);
        // EPERM, not the EINVAL that clearing the ambient set tolerates: every call fails.
        assert_eq!(
            drop_with(&mut k, &target(true)),
            Err(DropError {
                step: call.step(),
                errno: Errno::EPERM
            }),
            "failing call {n} ({call:?})"
        );
        assert_eq!(
            k.calls(),
            &full[..=n],
            "nothing is attempted after call {n} ({call:?}) failed"
        );
    }
}

#[test]
fn a_failure_of_each_step_is_reported_as_that_step() {
    for step in [
        DropStep::TakeRootBack,
        DropStep::ReadBounding,
        DropStep::DropBounding,
        DropStep::ClearAmbient,
        DropStep::SetGroups,
        DropStep::SetResGid,
        DropStep::SetResUid,
        DropStep::Capset,
        DropStep::NoNewPrivs,
    ] {
        let mut k = kernel().fail_on(step, Errno::EACCES);
        let err = drop_with(&mut k, &target(true)).unwrap_err();
        assert_eq!(
            err,
            DropError {
                step,
                errno: Errno::EACCES
            }
        );
        assert_eq!(k.calls().last().map(|c| c.step()), Some(step));
        assert!(err.to_string().contains(&step.to_string()), "{err}");
    }
}

#[test]
fn a_kernel_without_ambient_capabilities_does_not_stop_the_drop() {
    for privileged in [true, false] {
        let mut k = kernel().fail_on(DropStep::ClearAmbient, Errno::EINVAL);
        drop_with(&mut k, &target(privileged)).unwrap();
        assert_eq!(k.calls().last(), Some(&Call::NoNewPrivs));
    }
}

#[test]
fn setgroups_receives_exactly_the_targets_groups() {
    let mut t = target(true);
    t.groups = vec![Gid::from_raw(991), Gid::from_raw(27), Gid::from_raw(1000)];
    let mut k = kernel();
    drop_with(&mut k, &t).unwrap();
    assert_eq!(k.groups(), Some(t.groups.as_slice()));

    t.groups.clear();
    let mut k = kernel();
    drop_with(&mut k, &t).unwrap();
    assert_eq!(
        k.groups(),
        Some(&[][..]),
        "no groups: setgroups still runs and clears root's"
    );
}

#[test]
fn a_capability_the_kernel_does_not_know_stops_the_bounding_loop() {
    let mut t = target(true);
    t.last_cap = 5;
    let mut k = kernel();
    let err = drop_with(&mut k, &t).unwrap_err();
    assert_eq!(
        err,
        DropError {
            step: DropStep::ReadBounding,
            errno: Errno::EINVAL
        }
    );
    assert_eq!(k.calls().last(), Some(&Call::ReadBounding(4)));
}

const CHILD: &str = "LAUNCHER_SYS_PRIVS_CHILD";

/// In the re-executed test binary: drop on the real kernel as the current user, which
/// needs no privilege, and check the result.
fn drop_and_verify_here() {
    let t = Target {
        uid: nix::unistd::getuid(),
        gid: nix::unistd::getgid(),
        groups: nix::unistd::getgroups().unwrap(),
        last_cap: super::last_cap().unwrap(),
        privileged: false,
    };
    if !caps::read(None, caps::CapSet::Effective)
        .unwrap()
        .is_empty()
    {
        let err = super::verify(&t).unwrap_err();
        assert!(
            err.to_string()
                .contains("effective capabilities remain: CAP_"),
            "{err}"
        );
    }
    super::drop_to(&t).unwrap();
    super::verify(&t).unwrap();
    assert!(
        caps::read(None, caps::CapSet::Permitted)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_real_drop_to_the_current_user_passes_verify() {
    if std::env::var_os(CHILD).is_some() {
        return drop_and_verify_here();
    }
    // The drop is for good: it happens in a process of its own.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "privs::tests::the_real_drop_to_the_current_user_passes_verify",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the child ran the test: {text}");
}

const ACTING_CHILD: &str = "LAUNCHER_SYS_PRIVS_ACTING_CHILD";
/// An id no account on a test machine has.
const STRANGER: u32 = 64_999;

/// In the re-executed test binary, as root: act as a stranger, whose rights and groups
/// then decide file access; root comes back for `with_root` only and when the guard
/// goes, and the drop takes it back too.
fn act_as_a_stranger_here(root_only: &std::path::Path) {
    use std::fs::File;
    let (uid, gid) = (Uid::from_raw(STRANGER), Gid::from_raw(STRANGER));
    let user = Ids {
        uid,
        gid,
        groups: vec![gid],
    };
    File::open(root_only).expect("root reads its own file");
    let mut ids = Identity::of_process().unwrap();
    assert!(!ids.acting());
    {
        let mut acting = ids.act_as(user.clone()).unwrap();
        assert!(acting.acting());
        let r = nix::unistd::getresuid().unwrap();
        assert_eq!(
            (r.real, r.effective, r.saved),
            (Uid::from_raw(0), uid, Uid::from_raw(0))
        );
        assert_eq!(
            nix::unistd::getgroups().unwrap(),
            vec![gid],
            "the user's groups only"
        );
        let denied = File::open(root_only).unwrap_err();
        assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(
            caps::read(None, caps::CapSet::Effective)
                .unwrap()
                .is_empty(),
            "no effective capability while acting as the user"
        );
        assert!(
            !nix::sys::prctl::get_dumpable().unwrap(),
            "non-dumpable again after the switch"
        );
        assert!(acting.with_root(|| File::open(root_only)).unwrap().is_ok());
        assert_eq!(nix::unistd::geteuid(), uid, "acting as the user again");
        assert!(File::open(root_only).is_err());
    }
    assert!(!ids.acting(), "root again when the guard went");
    assert!(File::open(root_only).is_ok());
    let t = Target {
        uid,
        gid,
        groups: vec![gid],
        last_cap: super::last_cap().unwrap(),
        privileged: true,
    };
    // A forked child of a process acting as the user drops from there (and never returns
    // to the guard, as a child execs: it is forgotten, not dropped).
    let acting = ids.act_as(user).unwrap();
    super::drop_to(&t).expect("the drop takes root back first");
    super::verify(&t).unwrap();
    std::mem::forget(acting);
}

#[test]
fn acting_as_the_user_checks_access_with_its_rights_and_root_comes_back_only_on_request() {
    if let Some(path) = std::env::var_os(ACTING_CHILD) {
        return act_as_a_stranger_here(std::path::Path::new(&path));
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("blt-acting-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("root-only");
    std::fs::write(&file, b"secret").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // Acting and the drop change the whole process: a process of its own.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "privs::tests::acting_as_the_user_checks_access_with_its_rights_and_root_comes_back_only_on_request",
            "--test-threads=1",
        ])
        .env(ACTING_CHILD, &file)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "the child ran the test: {text}");
}

// The identity seam against the fake: the order of its calls, its atomicity and its
// guards, without root.

fn user() -> Ids {
    Ids {
        uid: Uid::from_raw(990),
        gid: Gid::from_raw(991),
        groups: vec![Gid::from_raw(991)],
    }
}

fn seam() -> Identity<Fake> {
    Identity::new(kernel()).unwrap()
}

/// The calls the fake recorded after the identity read itself.
fn switch_calls(ids: &Identity<Fake>) -> Vec<Call> {
    ids.kernel().calls()[2..].to_vec()
}

#[test]
fn acting_sets_groups_gid_then_uid_and_the_guard_puts_root_back_uid_first() {
    let mut ids = seam();
    assert_eq!(
        ids.kernel().calls(),
        [Call::CurrentIds, Call::CurrentGroups],
        "the identity reads itself once"
    );
    {
        let acting = ids.act_as(user()).unwrap();
        assert!(acting.acting());
        assert_eq!(
            acting.kernel().effective(),
            (Uid::from_raw(990), Gid::from_raw(991))
        );
    }
    assert!(!ids.acting());
    assert_eq!(
        ids.kernel().effective(),
        (Uid::from_raw(0), Gid::from_raw(0))
    );
    assert_eq!(
        ids.kernel().groups(),
        Some(&[Gid::from_raw(0)][..]),
        "root's groups back"
    );
    assert_eq!(
        switch_calls(&ids),
        [
            Call::SetGroups(1),
            Call::SetEgid(Gid::from_raw(991)),
            Call::SetEuid(Uid::from_raw(990)),
            Call::NonDumpable,
            Call::SetEuid(Uid::from_raw(0)),
            Call::SetGroups(1),
            Call::SetEgid(Gid::from_raw(0)),
            Call::NonDumpable,
        ]
    );
}

#[test]
fn a_failed_uid_switch_puts_the_gid_and_groups_back_and_names_the_call() {
    let mut ids =
        Identity::new(kernel().fail_call(Call::SetEuid(Uid::from_raw(990)), Errno::EPERM)).unwrap();
    let err = ids.act_as(user()).map(drop).unwrap_err();
    assert_eq!(err.call, super::SwitchCall::SetEuid);
    assert_eq!(err.errno, Errno::EPERM);
    assert!(err.to_string().contains("setresuid"), "{err}");
    assert!(!ids.acting());
    assert_eq!(
        ids.kernel().effective(),
        (Uid::from_raw(0), Gid::from_raw(0))
    );
    assert_eq!(ids.kernel().groups(), Some(&[Gid::from_raw(0)][..]));
    assert_eq!(
        switch_calls(&ids),
        [
            Call::SetGroups(1),
            Call::SetEgid(Gid::from_raw(991)),
            Call::SetEuid(Uid::from_raw(990)),
            // Undone, from root's effective uid.
            Call::SetEuid(Uid::from_raw(0)),
            Call::SetGroups(1),
            Call::SetEgid(Gid::from_raw(0)),
        ]
    );
}

#[test]
fn root_again_inside_acting_returns_to_the_user_and_a_panic_still_restores() {
    let mut ids = seam();
    {
        let mut acting = ids.act_as(user()).unwrap();
        assert!(acting.with_root(|| ()).is_ok());
        assert!(acting.acting(), "the user again after with_root");
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _root = acting.root().unwrap();
            panic!("inside root");
        }));
        assert!(unwound.is_err());
        assert!(acting.acting(), "the user again after a panic with root");
        assert_eq!(
            acting.kernel().effective(),
            (Uid::from_raw(990), Gid::from_raw(991))
        );
    }
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _acting = ids.act_as(user()).unwrap();
        panic!("while acting");
    }));
    assert!(unwound.is_err());
    assert!(!ids.acting(), "root again after a panic while acting");
}

#[test]
fn a_drop_from_a_process_acting_as_the_user_takes_root_back_first() {
    let mut k = kernel().acting_as(Uid::from_raw(990), Gid::from_raw(991));
    drop_with(&mut k, &target(true)).unwrap();
    assert_eq!(
        k.calls()[..4],
        [
            Call::CurrentIds,
            Call::SetEuid(Uid::from_raw(0)),
            Call::SetEgid(Gid::from_raw(0)),
            Call::ReadBounding(0),
        ]
    );
}
