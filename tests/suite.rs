//! The integration tests, one binary (as ripgrep's tests/tests.rs): every file beside this
//! one is a module of it, and the helpers (util, container, guide) compile once.
//!
//! Most tests act on the machine as root: they create users, boot systemd in containers,
//! start PostgreSQL servers and podman containers, and remove all of it afterwards. Each
//! of them starts with [`util::root_only!`]: as root it holds the suite's one slot, so
//! those tests run one at a time whatever `--test-threads` says; otherwise it is skipped
//! with one line on stderr (`SKIP module::test: why`), and under `CI=true` it fails
//! instead. A test that needs more (the real Bitpoll's snapshot, podman, nix-instantiate,
//! journalctl) skips or fails by the same rule (`util::skip`).
//!
//! Run: `bash scripts/test.sh` (as root, installs what the tests need), or one module:
//! `cargo test --test suite terminal:: -- --test-threads=1`.

mod container;
mod guide;
mod util;

mod agree;
mod check;
mod cli_help;
mod doc_links;
mod e2e;
mod example_config;
mod guide_debian;
mod guide_nixos;
mod hostile;
mod install;
mod manage;
mod packaged_settings;
mod podman;
mod postgres;
mod real_bitpoll;
mod rules;
mod settings_contract;
mod systemd;
mod systemd_modes;
mod systemd_trixie;
mod terminal;
mod unit_file;
