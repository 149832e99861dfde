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


class JsonBody(serializers.Serializer):
    """A JSON request body as the schema states it: only its fields (DRF alone ignores others,
    so a misspelt "if_activ" would silently drop a guard), each of its JSON type (DRF alone
    takes 5 for "5" and "5" for 5)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors = {name: ["unknown field"] for name in data if name not in self.fields}
            for name, field in self.fields.items():
                value = data.get(name)
                expected = _json_type(field)
                if value is None or expected is None or field.read_only:
                    continue
                types, label = expected
                if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                    errors[name] = [f"must be {label}"]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)
