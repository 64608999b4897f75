//! Without features there is nothing to build: the Redis core is plain Rust.
//! With `tf`, the C++ op shim in `cc/` and the cxx bridge are compiled against the headers of
//! the TensorFlow wheel that the building interpreter imports, and the cdylib is linked to that
//! wheel's `libtensorflow_framework.so.2`. The interpreter is the one setuptools-rust runs
//! under (it exports `$PYO3_PYTHON`), else `$PYTHON`, else `python3` on `PATH`. Cargo reruns
//! this script when that interpreter, its TensorFlow library or its TensorFlow headers change.
//! With only `bridge`, the generated C++ side of the bridge is copied to `$RDE_BRIDGE_OUT`
//! (`include/` and `sources/`) for a build system that compiles the C++ itself (Bazel).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tf")]
    tf::build();
    #[cfg(all(feature = "bridge", not(feature = "tf")))]
    bridge::generate();
}

#[cfg(all(feature = "bridge", not(feature = "tf")))]
mod bridge {
    use std::path::Path;

    pub fn generate() {
        println!("cargo:rerun-if-changed=src/ffi.rs");
        println!("cargo:rerun-if-env-changed=RDE_BRIDGE_OUT");
        // Generates the bridge header and source under $OUT_DIR/cxxbridge; nothing is compiled.
        let _ = cxx_build::bridge("src/ffi.rs");
        if let Ok(dest) = std::env::var("RDE_BRIDGE_OUT") {
            let gen = Path::new(&std::env::var("OUT_DIR").unwrap()).join("cxxbridge");
            for f in [
                "include/rust/cxx.h",
                "include/redis-embedding/src/ffi.rs.h",
                "sources/redis-embedding/src/ffi.rs.cc",
            ] {
                let to = Path::new(&dest).join(f);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(gen.join(f), &to).unwrap_or_else(|e| panic!("copy {f}: {e}"));
            }
        }
    }
}

#[cfg(feature = "tf")]
mod tf {
    use std::process::Command;

    /// The interpreter whose TensorFlow the library is built for: the one setuptools-rust
    /// runs under (`pip install` exports it as `PYO3_PYTHON`), then `$PYTHON`, then `python3`.
    fn python() -> String {
        ["PYO3_PYTHON", "PYTHON"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|p| !p.is_empty()))
            .unwrap_or_else(|| {
                // `python3` depends on PATH (an activated venv): a change there may mean
                // another TensorFlow.
                println!("cargo:rerun-if-env-changed=PATH");
                println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
                "python3".into()
            })
    }

    /// What the build needs from the installed TensorFlow.
    struct TfWheel {
        compile: Vec<String>,
        link: Vec<String>,
        /// `tf.__version__`, compiled into the library (`cc/ops.cc`) and checked at import.
        version: String,
        /// Files whose change means another TensorFlow: the framework library and `version.h`.
        fingerprints: Vec<String>,
    }

    /// Asks the installed TensorFlow for its compile and link flags.
    fn tf_wheel() -> TfWheel {
        let script = "import os, tensorflow as tf\n\
            inc = tf.sysconfig.get_include()\n\
            lib = tf.sysconfig.get_lib()\n\
            print(tf.__version__)\n\
            print(os.path.join(lib, 'libtensorflow_framework.so.2'))\n\
            print(os.path.join(inc, 'tensorflow', 'core', 'public', 'version.h'))\n\
            print('\\t'.join(tf.sysconfig.get_compile_flags()))\n\
            print('\\t'.join(tf.sysconfig.get_link_flags()))";
        let out = Command::new(python())
            .args(["-c", script])
            .env("TF_CPP_MIN_LOG_LEVEL", "3")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} to find TensorFlow: {e}", python()));
        if !out.status.success() {
            panic!(
                "`{} -c 'import tensorflow'` failed; the tf feature builds against an installed \
                 TensorFlow wheel (use `pip install --no-build-isolation .`):\n{}",
                python(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout).expect("utf-8 flags");
        // TensorFlow may print to stdout while importing: the answer is the last five lines.
        let lines: Vec<&str> = text.lines().collect();
        let Some(answer) = lines
            .get(lines.len().saturating_sub(5)..)
            .filter(|l| l.len() == 5)
        else {
            panic!("{} printed no TensorFlow build flags:\n{text}", python());
        };
        let split = |l: &str| l.split('\t').map(str::to_owned).collect();
        TfWheel {
            version: answer[0].to_owned(),
            fingerprints: vec![answer[1].to_owned(), answer[2].to_owned()],
            compile: split(answer[3]),
            link: split(answer[4]),
        }
    }

    pub fn build() {
        println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
        println!("cargo:rerun-if-env-changed=PYTHON");
        for f in [
            "cc/ops.cc",
            "cc/kernels.cc",
            "cc/table_resource.h",
            "cc/status.h",
            "src/ffi.rs",
        ] {
            println!("cargo:rerun-if-changed={f}");
        }
        let TfWheel {
            compile,
            link,
            version,
            fingerprints,
        } = tf_wheel();
        println!(
            "cargo:warning=building the op library for TensorFlow {version} (from {})",
            python()
        );
        for f in &fingerprints {
            println!("cargo:rerun-if-changed={f}");
        }
        let mut b = cxx_build::bridge("src/ffi.rs");
        b.file("cc/ops.cc")
            .file("cc/kernels.cc")
            .std("c++17")
            .include("cc")
            .define("RDE_TF_VERSION", format!("\"{version}\"").as_str());
        for f in &compile {
            if let Some(dir) = f.strip_prefix("-I") {
                b.include(dir);
            } else if f.starts_with("-D") {
                b.flag(f);
            }
        }
        for w in [
            "-Wno-unused-parameter",
            "-Wno-sign-compare",
            "-Wno-interference-size",
            "-Wno-deprecated-declarations",
            "-Wno-ignored-qualifiers",
            "-Wno-missing-field-initializers",
        ] {
            b.flag_if_supported(w);
        }
        // RDE_ASAN=1 instruments the C++ shim (and the bridge) with AddressSanitizer; the
        // library must then run with libasan preloaded (scripts/asan.sh).
        println!("cargo:rerun-if-env-changed=RDE_ASAN");
        let asan = std::env::var("RDE_ASAN").is_ok_and(|v| v == "1");
        if asan {
            b.flag("-fsanitize=address").flag("-fno-omit-frame-pointer");
            println!("cargo:rustc-cdylib-link-arg=-fsanitize=address");
        }
        // REGISTER_OP / REGISTER_KERNEL_BUILDER live in static initialisers nothing refers to:
        // without whole-archive the linker drops them and no op gets registered.
        b.link_lib_modifier("+whole-archive");
        b.compile("rde_ops");
        for f in &link {
            if let Some(dir) = f.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={dir}");
            } else if f.starts_with("-l") {
                println!("cargo:rustc-cdylib-link-arg={f}");
            }
        }
    }
}
