"""From a trained model to numbers and pages: ``inference`` (class probabilities and attention maps), ``metrics``,
``plots``, ``prediction`` (what predict.py writes, and the inputs of the HTML report), ``html_report`` (report.html:
rendering only, arrays in, file out), ``attention_check`` (do the maps land on the object?), ``comparison`` (the
statistics and tables of a comparison of training methods). Imports
:mod:`ws_dan.common`, :mod:`ws_dan.data` and :mod:`ws_dan.models`.
"""
