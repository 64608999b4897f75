//! Without features there is nothing to build: the Redis core is plain Rust.
//! With `tf`, the C++ op shim in `cc/` and the cxx bridge are compiled against the headers of
//! the TensorFlow wheel that `$PYTHON` (default `python3`) imports, and the cdylib is linked
//! to that wheel's `libtensorflow_framework.so.2`.
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

    fn python() -> String {
        std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
    }

    /// Asks the installed TensorFlow for its compile and link flags.
    fn tf_flags() -> (Vec<String>, Vec<String>) {
        let script = "import tensorflow as tf\nprint('\\t'.join(tf.sysconfig.get_compile_flags()))\nprint('\\t'.join(tf.sysconfig.get_link_flags()))";
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
        let mut lines = text.lines().filter(|l| !l.trim().is_empty()).rev();
        let link = lines
            .next()
            .expect("link flags")
            .split('\t')
            .map(str::to_owned)
            .collect();
        let compile = lines
            .next()
            .expect("compile flags")
            .split('\t')
            .map(str::to_owned)
            .collect();
        (compile, link)
    }

    pub fn build() {
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
        let (compile, link) = tf_flags();
        let mut b = cxx_build::bridge("src/ffi.rs");
        b.file("cc/ops.cc")
            .file("cc/kernels.cc")
            .std("c++17")
            .include("cc");
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
