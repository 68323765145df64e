"""Running the pipeline as a batch job on a cluster: Ray job submission, KubeRay RayJob manifests, Slurm."""
