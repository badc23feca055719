//! The order of the drop, against the recording fake: no root needed.

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};

use super::fake::{Call, Fake};
use super::{DropError, DropStep, Target, drop_with};

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
        [Call::ClearAmbient, Call::CapsetEmpty, Call::NoNewPrivs]
    );
    assert_eq!(k.groups(), None, "setgroups was not called");
    assert_eq!(k.bounding(), 0b1011, "the bounding set is untouched");
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
