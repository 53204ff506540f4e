"""The product-path bench: real DDP ranks through Kafka, Faust and the planner service.

``shardsense bench`` runs every method of :mod:`benchmarks.loop.methods` on each
scenario. Product-path methods go through the whole loop a user runs (timing
sink -> embedded broker -> Faust processor -> planner service -> map source ->
rank-0 agreement), hosted by :mod:`benchmarks.loop.host` in the bench's parent
process; :mod:`benchmarks.loop.stages` times every stage of each onset from the
outside. Importing this package imports neither torch nor a service.
"""
