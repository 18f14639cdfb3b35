"""One short example method of each kind the method contract holds (hashkit/method.py), kept out of the
registry: tests/test_method_contract.py registers each for one test and runs the registry-wide checks on it,
and the docs' "Adding a method" page shows them. Copy one into ``methods/`` to start a new method."""
