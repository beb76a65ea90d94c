"""The sellers' choices flowing back into training.

KServe's payload logger (``spec.transformer.logger`` of the InferenceService) sends every request
(the photos) and every response (the suggestions, each with its ``prediction_id``) as CloudEvents to
the feedback sink (:mod:`~snapcat.feedback.sink`). The app backend tells the sink which category the
seller finally chose for a ``prediction_id``. The sink keeps both durably
(:mod:`~snapcat.feedback.store`), exports live top-1/top-3 agreement per model version for
``snapcat rollout analyze``, and ``snapcat feedback collect`` (:mod:`~snapcat.feedback.collect`)
turns the joined records into a ``path,category`` manifest for ``snapcat prepare``.
"""
