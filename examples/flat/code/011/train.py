"""MVE training script for 011 (the team's own loop; the scaler does not run it)."""
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="config.yaml")
parser.add_argument("--seed", type=int, default=0)
print(parser.parse_args())
