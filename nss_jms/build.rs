//! Sets the soname of the cdylib: glibc loads the module as
//! `libnss_jms.so.2`, and the installed file carries that name.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnss_jms.so.2");
    println!("cargo:rerun-if-changed=build.rs");
}
