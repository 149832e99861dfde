"""Path converters for numbers the database stores: a number it cannot hold is no such object
(404 from the URL resolver), never a failed query (500). Registered in governance/urls.py."""

# Row ids are 64-bit (BigAutoField); 18 digits always fit.
MAX_ID = 10**18 - 1
# Policy version numbers are 32-bit (PositiveIntegerField); 9 digits always fit.
MAX_VERSION = 10**9 - 1


class IdConverter:
    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value) -> str:
        return str(value)


class VersionConverter(IdConverter):
    regex = "[0-9]{1,9}"
