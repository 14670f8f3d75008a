"""Offline evaluation of a face-embedding pipeline: standard pairs, LFW protocols, slices, plots.

The suite codes against :class:`~trainer.evaluation.pipeline_protocol.FacePipeline`; any detector
plus embedder that returns L2-normalised embeddings per image can be evaluated.
"""
