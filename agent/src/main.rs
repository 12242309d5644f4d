mod signer;

fn main() {}
