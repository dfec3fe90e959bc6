"""The task-agnostic core (docs/design.md §2, §6): what lets one set of gradient strategies train a
3D U-Net and a sequence Transformer alike.

* :mod:`~mmseg_robust.multimodal.protocol`: the model/task protocol (``MultimodalModel``,
  ``MultimodalTask``, ``MultimodalBatch``, ``BranchOutput``) and the row assembly
  (``AssembleRows``) of branch outputs;
* :mod:`~mmseg_robust.multimodal.fusion` (``make_fusion``), with
  :mod:`~mmseg_robust.multimodal.branch_fusion` and :mod:`~mmseg_robust.multimodal.gated_fusion`: how a
  subset's branch outputs are fused (``mean``, ``weighted``, ``gated``);
* :mod:`~mmseg_robust.multimodal.subsets`: modality subsets by index and the ``--subsets`` grammar
  (torch-free).

It imports only the foundation (errors, choices). The strategies build on it, the training engine
(:mod:`mmseg_robust.engine`) beside it; the applications' models and tasks implement it. Nothing is
imported here, so that :mod:`~mmseg_robust.multimodal.subsets` stays torch-free.
"""
