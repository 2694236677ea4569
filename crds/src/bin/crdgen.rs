//! Prints the Auction CustomResourceDefinition as YAML:
//! `cargo run -p gavel-crds --bin crdgen > crds/auction.yaml`.

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", gavel_crds::crd_yaml()?);
    Ok(())
}
