"""Repository rule exposing the installed TensorFlow wheel's headers and framework library."""

_SCRIPT = """
import tensorflow as tf
print(tf.__version__)
print(tf.sysconfig.get_include())
print(tf.sysconfig.get_lib())
print(' '.join(f for f in tf.sysconfig.get_compile_flags() if f.startswith('-D')))
"""

def _tf_configure_impl(ctx):
    python = ctx.os.environ.get("PYTHON_BIN_PATH") or ctx.which("python3")
    if not python:
        fail("tf_configure: set PYTHON_BIN_PATH or put python3 on PATH")
    res = ctx.execute([python, "-c", _SCRIPT], environment = {"TF_CPP_MIN_LOG_LEVEL": "3"})
    if res.return_code != 0:
        fail("tf_configure: %s cannot import tensorflow:\n%s" % (python, res.stderr))
    lines = res.stdout.strip().splitlines()
    version, include, lib, defines = lines[-4], lines[-3], lines[-2], lines[-1].split(" ")
    # cc/ops.cc embeds the version the library is built for (checked at import). `defines`
    # are shell-tokenized, hence the escaped quotes.
    defines = [d[2:] for d in defines if d] + ['RDE_TF_VERSION=\\"%s\\"' % version]
    ctx.symlink(include, "include")
    ctx.symlink(lib + "/libtensorflow_framework.so.2", "libtensorflow_framework.so.2")
    ctx.file("BUILD", """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "tf_headers",
    hdrs = glob(["include/**/*.h", "include/**/*.inc", "include/**/*.hpp",
                 "include/Eigen/**", "include/unsupported/**", "include/third_party/**"]),
    includes = ["include"],
    defines = {defines},
)

cc_import(
    name = "tf_framework",
    shared_library = "libtensorflow_framework.so.2",
)
""".format(defines = repr(defines)))

tf_configure = repository_rule(
    implementation = _tf_configure_impl,
    environ = ["PYTHON_BIN_PATH", "PATH"],
    local = True,
)
