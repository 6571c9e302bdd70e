"""BEIR-style evaluation: datasets, runs through the engine, standard metrics, reports."""
