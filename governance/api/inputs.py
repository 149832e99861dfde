"""What callers send the API, read as its OpenAPI schema describes it: no more leniently."""

from rest_framework import serializers

from governance.selectors import project_for_user


def query(request) -> dict:
    """The query string as a plain dict. DRF reads a QueryDict as an HTML form would be read,
    where a blank value means "not given"; a caller of the API who sends ?since= has sent a
    date that is not one, and is told so. (The pages keep the form reading: an empty input.)"""
    return request.query_params.dict()


class ProjectQuery(serializers.Serializer):
    project = serializers.SlugField(required=False, help_text="project slug; optional when you belong to one project")


def query_project(request):
    """The project named by ?project= among the caller's, or their only one."""
    project_query = ProjectQuery(data=query(request))
    project_query.is_valid(raise_exception=True)
    return project_for_user(user=request.user, slug=project_query.validated_data.get("project"))


def _json_type(field) -> tuple[tuple[type, ...], str] | None:
    """The JSON types a field takes in a body, and how to name them; None: whatever DRF takes."""
    if isinstance(field, serializers.BooleanField):
        return (bool,), "true or false"
    if isinstance(field, serializers.IntegerField):
        return (int,), "a whole number"
    if isinstance(field, serializers.FloatField):
        return (int, float), "a number"
    if isinstance(field, (serializers.CharField, serializers.ChoiceField)):
        return (str,), "a string"
    return None


def _type_error(field, value) -> str | None:
    """What is wrong with the JSON type of `value` for `field` (the items of lists and objects
    too), or None."""
    if value is None:
        return None
    if isinstance(field, (serializers.ListField, serializers.DictField)):
        items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else ()
        for item in items:
            problem = _type_error(field.child, item)
            if problem:
                return f"each item {problem}"
        return None
    expected = _json_type(field)
    if expected is None:
        return None
    types, label = expected
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return f"must be {label}"
    # The schema's maxLength is of the string sent: DRF checks it after trimming whitespace, so a
    # name of 101 characters, one of them a leading space, would pass a limit of 100.
    if isinstance(field, serializers.CharField) and field.max_length is not None and len(value) > field.max_length:
        return f"must be at most {field.max_length} characters long"
    return None


class JsonBody(serializers.Serializer):
    """A JSON request body as the schema states it: only its fields (DRF alone ignores others,
    so a misspelt "if_activ" would silently drop a guard), each of its JSON type (DRF alone
    takes 5 for "5" and "5" for 5). Nested bodies that are JsonBody hold to it as well."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors = {name: ["unknown field"] for name in data if name not in self.fields}
            for name, field in self.fields.items():
                problem = None if field.read_only else _type_error(field, data.get(name))
                if problem:
                    errors[name] = [problem]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)
