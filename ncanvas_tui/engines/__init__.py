"""Engines: Polygraphy prep, TensorRT / TensorRT-RTX builds, Q/DQ quantization, the engine library.

Modules (heavy libraries are imported inside functions; importing these is cheap):

- ``compat``    the one place that knows TensorRT 8.6 / 10 / 11 / RTX differences
- ``prep``      Polygraphy sanitize -> NAME.prep.onnx, checked with ONNX Runtime
- ``calibrate`` real calibration images, preprocessed per model
- ``quantize``  Q/DQ ONNX (per backend flavour) and fp16 ONNX
- ``plan``      plan_build(): validate a BuildRequest, read and hash the ONNX once, the ArtefactKey
- ``build``     build(plan): small steps (Polygraphy loaders, in a child process) -> artefact + sidecar
- ``artefacts`` list_artefacts() / select(): which artefact runs, and what is wrong with the others
- ``acceptance`` the GPU self-test (``ncanvas doctor --gpu-selftest``)
- ``store``     EngineStore: artefacts, sidecars, checks (stale, foreign, corrupt), locks; atomic writes
"""
