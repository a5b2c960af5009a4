"""The QA record for people: the .xlsx archive of every notification."""
