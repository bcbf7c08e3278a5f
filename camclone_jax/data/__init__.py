"""Data: the triplet record schema, synthetic camera-clone generator and input pipeline."""
