"""One behaviour suite, parametrised over every transport (see ``conftest.CASES``)."""
