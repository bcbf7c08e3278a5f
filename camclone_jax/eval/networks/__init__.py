"""The networks only the evaluation runs (their weights are read by convert/raft.py and
convert/dino.py; none is downloaded):

  raft  RAFT optical flow as torchvision lays it out (VBench's Dynamic Degree, eval/motion.py)
  dino  DINO ViT features as transformers' ViTModel computes them (VBench's Subject
        Consistency, eval/consistency.py)
"""
