"""Training losses, one per file (images are (B,3,H,W) in [-1, 1]).

clip: symmetric InfoNCE with all-gather; dino / ibot: DINOv2's CLS and masked-patch losses, centering: their
teacher targets (Sinkhorn-Knopp or softmax centring); koleo; kl (variational bottleneck); lpips and
reconstruction (L1 + LPIPS); gan: stage-2 discriminator and hinge losses. Import the submodule you need.
"""
