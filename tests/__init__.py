"""Tests. Where a source module has tests of its own, this is where to find them:

=================================  ===========================================================
source (``src/cellmaps/``)         tests
=================================  ===========================================================
``io/`` (images, points, masks)    test_io, test_channels, test_unusual_inputs, test_bad_inputs
``io/scale``, ``inference/scale``  test_auto_scale
``io/stain``                       test_stain
``targets/``                       test_targets
``metrics/``                       test_metrics, test_matching, test_evaluate
``postprocess/peaks``, ``hmaxima``  test_peaks, test_hmaxima
``postprocess/decode``             test_decode, test_evidence_floor
``postprocess/split``              test_split
``recipes/migrate``                test_migrate
``inference/tiles``                test_engine (tiling), test_inference_net
``inference/stream``, ``slides``   test_slides
``training/``, ``optim``           test_training_engine, test_engine
``tune``                           test_engine, test_evidence_floor, test_split, test_kinet
``batch``, ``predict``, ``outputs``  test_batch, test_unusual_inputs
``ki67``, ``weak_roi``             test_kinet
``crosseval``                      test_crosseval
the five papers end to end         test_deepdistance, test_split, test_weakly_points, test_kinet
the import layers (all of it)      test_layers
=================================  ===========================================================
"""
