"""Repository rule that builds the Rust core with cargo (rules_rust cannot be fetched offline)
and exposes it as a cc_library: the static library plus the cxx-generated bridge sources."""

def _rust_core_impl(ctx):
    root = ctx.path(Label("//:Cargo.toml")).dirname
    cargo = ctx.which("cargo")
    if not cargo:
        fail("rust_core: cargo is not on PATH")
    gen = ctx.path("gen")
    res = ctx.execute(
        [
            cargo, "rustc", "--release", "--lib", "--features", "bridge",
            "--crate-type", "staticlib",
            "--manifest-path", str(root) + "/Cargo.toml",
            "--target-dir", str(ctx.path("target")),
        ],
        environment = {"RDE_BRIDGE_OUT": str(gen)},
        timeout = 3600,
        quiet = True,
    )
    if res.return_code != 0:
        fail("rust_core: cargo failed:\n" + res.stderr)
    ctx.symlink(ctx.path("target/release/libredis_embedding.a"), "librde_core.a")
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

# The Rust archive must come after the bridge object that calls into it on the link line,
# so it is a dependency of the bridge rather than a source beside it.
cc_import(
    name = "core",
    static_library = "librde_core.a",
)

cc_library(
    name = "bridge",
    srcs = ["gen/sources/redis-embedding/src/ffi.rs.cc"],
    hdrs = glob(["gen/include/**/*.h"]),
    includes = ["gen/include"],
    copts = ["-std=c++17"],
    linkopts = ["-lpthread", "-ldl", "-lm"],
    deps = [":core"],
)
""")

rust_core = repository_rule(
    implementation = _rust_core_impl,
    environ = ["PATH", "HOME", "CARGO_HOME", "RDE_REBUILD"],
    local = True,
)
