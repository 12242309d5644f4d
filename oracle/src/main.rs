mod attestation;

fn main() {}
