//! Generates Rust bindings for the Mosquitto plugin API (v5) from the
//! system headers with bindgen, restricted to an allowlist of the functions,
//! structs and constants the plugin uses.
//!
//! Headers: `/usr/include/mosquitto_broker.h` and `mosquitto_plugin.h`
//! (Debian `mosquitto-dev`) and `mosquitto.h` (Debian `libmosquitto-dev`),
//! or the directory in `MOSQUITTO_INCLUDE_DIR`. bindgen needs libclang
//! (Debian `libclang-dev`).

use std::path::{Path, PathBuf};

const HEADERS: [&str; 3] = ["mosquitto.h", "mosquitto_broker.h", "mosquitto_plugin.h"];

/// The only Mosquitto functions the plugin calls.
const FUNCTIONS: &[&str] = &[
    "mosquitto_callback_register",
    "mosquitto_callback_unregister",
    "mosquitto_log_printf",
    "mosquitto_client_id",
    "mosquitto_client_username",
    "mosquitto_client_certificate",
    "mosquitto_set_username",
    "mosquitto_kick_client_by_clientid",
];

const TYPES: &[&str] = &[
    "mosquitto_opt",
    "mosquitto_plugin_id_t",
    "mosquitto_evt_basic_auth",
    "mosquitto_evt_acl_check",
    "mosquitto_evt_tick",
    "mosquitto_evt_disconnect",
    "mosquitto_evt_reload",
    "mosquitto_evt_message",
    "MOSQ_FUNC_generic_callback",
    "mosq_err_t",
    "mosquitto_plugin_event",
];

const VARS: &[&str] = &[
    "MOSQ_ERR_.*",
    "MOSQ_ACL_.*",
    "MOSQ_LOG_(INFO|NOTICE|WARNING|ERR|DEBUG)",
    "MOSQ_EVT_.*",
    "MOSQ_PLUGIN_VERSION",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MOSQUITTO_INCLUDE_DIR");

    let dir = std::env::var_os("MOSQUITTO_INCLUDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    let missing: Vec<&str> = HEADERS
        .iter()
        .copied()
        .filter(|h| !dir.join(h).is_file())
        .collect();
    if !missing.is_empty() {
        panic!(
            "\n\ngatehouse-mosquitto: Mosquitto plugin headers not found in {}: missing {}.\n\
             Install them with `apt-get install mosquitto-dev libmosquitto-dev` (Debian/Ubuntu),\n\
             or set MOSQUITTO_INCLUDE_DIR to the directory holding mosquitto_broker.h,\n\
             mosquitto_plugin.h and mosquitto.h.\n",
            dir.display(),
            missing.join(", ")
        );
    }
    for h in HEADERS {
        println!("cargo:rerun-if-changed={}", dir.join(h).display());
    }

    let wrapper: String = HEADERS
        .iter()
        .map(|h| format!("#include <{h}>\n"))
        .collect();
    let mut builder = bindgen::Builder::default()
        .header_contents("gatehouse_mosquitto_wrapper.h", &wrapper)
        .clang_arg(format!("-I{}", dir.display()))
        .rust_target(bindgen::RustTarget::stable(85, 0).expect("Rust 1.85 is a bindgen target"))
        .rust_edition(bindgen::RustEdition::Edition2024)
        .prepend_enum_name(false)
        .layout_tests(false)
        .derive_default(false)
        .generate_comments(false);
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in TYPES {
        builder = builder.allowlist_type(t);
    }
    for v in VARS {
        builder = builder.allowlist_var(v);
    }
    let bindings = builder.generate().unwrap_or_else(|e| {
        panic!(
            "\n\ngatehouse-mosquitto: bindgen could not process the Mosquitto headers in {}: {e}.\n\
             bindgen needs libclang: `apt-get install libclang-dev`.\n",
            dir.display()
        )
    });
    let out = Path::new(&std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("mosquitto_bindings.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));

    // i2d_X509 / X509_free (declared by hand in src/sys.rs).
    println!("cargo:rustc-link-lib=dylib=crypto");
}
