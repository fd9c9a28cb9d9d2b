"""The comparison harness: experiments that turn every claim into numbers.

``python -m experiments --help`` lists them.
"""
