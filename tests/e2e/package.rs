//! The .deb package as `scripts/package` builds it, inspected with dpkg-deb: control fields,
//! file list and modes, conffiles, maintainer scripts, and the unit file (valid per
//! `systemd-analyze verify`, sandbox exposure per `systemd-analyze security`). For CI speed
//! it packages this test run's debug binary for amd64 (stripped in the package, gzip -1);
//! the arm64/armhf packages come from the same script with `--arch` and a dist build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gateway/ is inside the repository")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> (String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/test installs it)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Builds the amd64 package into a temp dir and extracts it.
struct Built {
    dir: tempfile::TempDir,
    deb: PathBuf,
}

impl Built {
    fn new() -> Built {
        let dir = tempfile::tempdir().unwrap();
        let (stdout, _) = run(Command::new(repo().join("scripts/package"))
            .args([
                "--arch",
                "amd64",
                "--fast",
                "--binary",
                env!("CARGO_BIN_EXE_waymark"),
            ])
            .arg("--out")
            .arg(dir.path()));
        let deb = PathBuf::from(stdout.trim());
        assert_eq!(
            deb.file_name().unwrap().to_string_lossy(),
            format!("waymark_{}_amd64.deb", env!("CARGO_PKG_VERSION"))
        );
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.path().join("root")));
        run(Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(dir.path().join("DEBIAN")));
        Built { dir, deb }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn control(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("DEBIAN").join(name)).unwrap()
    }
}

#[test]
fn deb_has_the_binary_unit_conffile_state_dir_and_scripts() {
    let b = Built::new();

    // Control fields.
    let field = |f: &str| run(Command::new("dpkg-deb").arg("-f").arg(&b.deb).arg(f)).0;
    assert_eq!(field("Package").trim(), "waymark");
    assert_eq!(field("Version").trim(), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Architecture").trim(), "amd64");
    let depends = field("Depends");
    assert!(depends.starts_with("libc6 (>= 2."), "{depends}");
    assert!(depends.contains("adduser"), "{depends}");
    assert!(field("Installed-Size").trim().parse::<u64>().unwrap() > 0);
    assert!(field("Description").contains("not enabled"));

    // File list with owners and modes.
    let (list, _) = run(Command::new("dpkg-deb").arg("-c").arg(&b.deb));
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/waymark"),
        (
            "-rw-r--r-- root/root",
            "./usr/lib/systemd/system/waymark.service",
        ),
        ("-rw-r--r-- root/root", "./etc/waymark/waymark.toml"),
        ("drwxr-x--- root/root", "./var/lib/waymark/"),
        ("-rw-r--r-- root/root", "./usr/share/doc/waymark/deploy.md"),
        ("-rw-r--r-- root/root", "./usr/share/doc/waymark/copyright"),
        (
            "-rw-r--r-- root/root",
            "./usr/share/doc/waymark/examples/99-waymark-serial.rules",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/doc/waymark/examples/80-can0.network",
        ),
    ] {
        assert!(
            list.lines()
                .any(|l| l.starts_with(mode) && l.ends_with(&format!(" {path}"))),
            "{mode} {path} missing in:\n{list}"
        );
    }
    assert!(!list.contains("./DEBIAN"), "{list}");

    // The packaged binary runs, and its config is the example.
    let (v, _) = run(Command::new(b.root().join("usr/bin/waymark")).arg("--version"));
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    assert_eq!(
        std::fs::read(b.root().join("etc/waymark/waymark.toml")).unwrap(),
        std::fs::read(repo().join("examples/waymark.toml")).unwrap()
    );

    // Conffiles: exactly the config file.
    assert_eq!(b.control("conffiles"), "/etc/waymark/waymark.toml\n");

    // Maintainer scripts: valid sh; user in dialout; nothing enabled or started on install.
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh")
            .arg("-n")
            .arg(b.dir.path().join("DEBIAN").join(script)));
    }
    let postinst = b.control("postinst");
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(postinst.contains("adduser --quiet waymark dialout"));
    assert!(postinst.contains("install -d -o waymark -g waymark -m 0750 /var/lib/waymark"));
    let code: Vec<&str> = postinst
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let code = code.join("\n");
    for forbidden in [
        "deb-systemd-helper enable",
        "systemctl enable",
        "systemctl start",
        "deb-systemd-invoke start",
        "deb-systemd-invoke restart",
    ] {
        assert!(!code.contains(forbidden), "postinst must not {forbidden}");
    }
    assert!(code.contains("deb-systemd-invoke try-restart 'waymark.service'"));
    assert!(
        b.control("prerm")
            .contains("deb-systemd-invoke stop 'waymark.service'")
    );
    let postrm = b.control("postrm");
    assert!(postrm.contains("\"$1\" = \"purge\""));
    assert!(postrm.contains("rm -rf /var/lib/waymark"));
    assert!(postrm.contains("deb-systemd-helper purge 'waymark.service'"));
}

#[test]
fn packaged_unit_verifies_and_is_sandboxed() {
    let b = Built::new();
    let unit =
        std::fs::read_to_string(b.root().join("usr/lib/systemd/system/waymark.service")).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "StateDirectory=waymark",
        "ConfigurationDirectory=waymark",
        "User=waymark",
        "SupplementaryGroups=dialout",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-ttyACM rw",
        "DeviceAllow=char-ttyS rw",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    let families = unit
        .lines()
        .find(|l| l.starts_with("RestrictAddressFamilies="))
        .unwrap();
    assert!(families.contains("AF_CAN"), "{families}");
    // The gateway's own stop deadline is below systemd's.
    assert!(unit.lines().any(|l| l == "TimeoutStopSec=30s"));
    assert!(waymark_gateway::systemd::STOP_DEADLINE < std::time::Duration::from_secs(30));

    // `systemd-analyze verify` checks that ExecStart= is executable: point it at the
    // extracted binary. Any warning (unknown key, bad value) fails the test.
    let dir = tempfile::tempdir().unwrap();
    let checked = dir.path().join("waymark.service");
    let exec = b.root().join("usr/bin/waymark");
    std::fs::write(
        &checked,
        unit.replace(
            "ExecStart=/usr/bin/waymark",
            &format!("ExecStart={}", exec.display()),
        ),
    )
    .unwrap();
    let (out, err) = run(Command::new("systemd-analyze").arg("verify").arg(&checked));
    assert!(out.trim().is_empty() && err.trim().is_empty(), "{out}{err}");

    // Exposure as `systemd-analyze security` rates it: at most 2.0.
    let (out, _) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&checked));
    let level = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for waymark.service: ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    let score: f64 = level.split_whitespace().next().unwrap().parse().unwrap();
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{out}");
}
