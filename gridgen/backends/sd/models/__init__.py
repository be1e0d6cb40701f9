"""Models on disk and in memory: `locate` finds a model by name and reads its configs (no torch), `families`
tells a single file's family from its tensor names and `configs/` ships each family's configs, `single_file`,
`checkpoint` and `vocab` read A1111-style files, `load` puts components on a device and `model_cache` keeps
recent ones loaded.
"""
