"""KFP v2 components: one folder per pipeline step, each a thin wrapper over the snapcat library.

Every component is a lightweight Python component whose ``base_image`` is the training image
(Dockerfile.train), which already has snapcat and kfp installed; so on the cluster each step runs
containerized, and ``kfp.local.SubprocessRunner`` runs the very same function on one machine.
"""
